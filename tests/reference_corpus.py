"""A seeded corpus of image-reference strings for the differential test against Docker's parser.

Valid references of every shape (every maximum at once, IPv6 literals, localhost, ports, every
separator, tags, each digest algorithm), then near-misses by class, at least `PER_CLASS` each,
then random edits and fuzz over the grammar's alphabet. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

PER_CLASS = 600
LOWER = string.ascii_lowercase + string.digits
SEPARATORS = (".", "_", "__", "-", "--", "---")
GRAMMAR = string.ascii_letters + string.digits + "._-/:@[]"
WHITESPACE_AND_CONTROL = (" ", "\t", "\n", "\r", "\v", "\f", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\xa0", "\u2028")
LOOK_ALIKES = {
    "a": "\u0430",  # Cyrillic a
    "e": "\u0435",
    "o": "\u03bf",  # Greek omicron
    "i": "\u0456",
    "c": "\u0441",
    "p": "\u0440",
    "x": "\u0445",
    "k": "\u212a",  # Kelvin sign: lowercases to an ASCII k
    "s": "\u017f",  # long s: uppercases to an ASCII S
    "l": "\u0131",  # dotless i
    "0": "\uff10",  # fullwidth digits
    "1": "\u0661",  # Arabic-Indic one
    ".": "\u2024",  # one-dot leader
    "/": "\u2215",  # division slash
    ":": "\ua789",  # modifier colon
    "-": "\u2010",  # hyphen
    "_": "\uff3f",  # fullwidth low line
    "@": "\uff20",  # fullwidth commercial at
}
DIGESTS = {"sha256": 64, "sha384": 96, "sha512": 128}


def _run(rng: random.Random, alphabet: str, low: int, high: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(low, high)))


def _label(rng: random.Random, *, upper: bool = False) -> str:
    alphabet = string.ascii_letters + string.digits if upper else LOWER
    if rng.random() < 0.3:
        return _run(rng, alphabet, 1, 3)
    return _run(rng, alphabet, 1, 6) + _run(rng, alphabet + "-", 0, 4) + _run(rng, alphabet, 1, 3)


def _host(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.1:
        return "localhost"
    if kind < 0.2:
        groups = [_run(rng, "0123456789abcdefABCDEF", 0, 4) for _ in range(rng.randint(2, 8))]
        return "[" + ":".join(groups).replace(":::", "::") + (":" if rng.random() < 0.1 else "") + "]"
    if kind < 0.3:
        return ".".join(str(rng.randint(0, 255)) for _ in range(4))
    if kind < 0.4:
        return rng.choice(
            ("docker.io", "index.docker.io", "registry-1.docker.io", "123456789012.dkr.ecr.us-east-1.amazonaws.com")
        )
    upper = rng.random() < 0.15
    return ".".join(_label(rng, upper=upper) for _ in range(rng.randint(1, 4)))


def _component(rng: random.Random) -> str:
    parts = [_run(rng, LOWER, 1, 6)]
    for _ in range(rng.randint(0, 3)):
        parts += [rng.choice(SEPARATORS), _run(rng, LOWER, 1, 5)]
    return "".join(parts)


def _tag(rng: random.Random) -> str:
    return rng.choice(string.ascii_letters + string.digits + "_") + _run(
        rng, string.ascii_letters + string.digits + "_.-", 0, 20
    )


def _digest(rng: random.Random) -> str:
    algorithm = rng.choice(sorted(DIGESTS))
    return f"{algorithm}:{_run(rng, '0123456789abcdef', DIGESTS[algorithm], DIGESTS[algorithm])}"


def valid_reference(rng: random.Random) -> str:
    domain = _host(rng) if rng.random() < 0.6 else ""
    if domain and rng.random() < 0.3:
        domain += f":{rng.randint(1, 65535)}"
    path = "/".join(_component(rng) for _ in range(rng.randint(1, 4)))
    name = f"{domain}/{path}" if domain else path
    tag = f":{_tag(rng)}" if rng.random() < 0.6 else ""
    digest = f"@{_digest(rng)}" if rng.random() < 0.3 else ""
    return name + tag + digest


def every_maximum(rng: random.Random) -> str:
    """A 253-character host, a 5-digit port, a 255-character path, a 128-character tag, a sha512 digest."""
    host = ".".join(_run(rng, LOWER, 63, 63) for _ in range(3)) + "." + _run(rng, LOWER, 61, 61)
    path = _run(rng, LOWER, 127, 127) + "/" + _run(rng, LOWER, 127, 127)
    return f"{host}:{rng.randint(10000, 65535)}/{path}:{_tag(rng)[:1]}{'t' * 127}@sha512:{'e' * 128}"


def _insert(rng: random.Random, text: str, piece: str) -> str:
    at = rng.randint(0, len(text))
    return text[:at] + piece + text[at:]


def _whitespace(rng: random.Random) -> str:
    return _insert(rng, valid_reference(rng), rng.choice(WHITESPACE_AND_CONTROL))


def _look_alike(rng: random.Random) -> str:
    image = valid_reference(rng) + "axo"  # at least some replaceable characters
    spots = [i for i, char in enumerate(image) if char in LOOK_ALIKES]
    at = rng.choice(spots)
    return image[:at] + LOOK_ALIKES[image[at]] + image[at + 1 :]


def _empty_component(rng: random.Random) -> str:
    image = valid_reference(rng)
    edits: list[Callable[[str], str]] = [
        lambda s: s.replace("/", "//", 1) if "/" in s else "/" + s,
        lambda s: "/" + s,
        lambda s: s.split(":")[0].split("@")[0] + "/",
        lambda s: s.split("@")[0] + ":",
        lambda s: s.split("@")[0] + "@",
        lambda s: s.replace(".", "..", 1) if "." in s else s + "..x",
        lambda s: "a..b.com/" + s.split("/")[-1],
        lambda s: "example.com:/" + s.split("/")[-1],
        lambda s: ":" + s,
        lambda s: s.split("@")[0] + ":@" + _digest(rng),
    ]
    return rng.choice(edits)(image)


def _upper_case(rng: random.Random) -> str:
    image = valid_reference(rng)
    letters = [i for i, char in enumerate(image) if char.islower()]
    if not letters:
        return image.upper() + "A"
    at = rng.choice(letters)
    return image[:at] + image[at].upper() + image[at + 1 :]


def _leading_dash(rng: random.Random) -> str:
    image = valid_reference(rng)
    starts = [0] + [i + 1 for i, char in enumerate(image) if char in "/:.@"]
    return _insert_at(image, rng.choice(starts), rng.choice("-._"))


def _insert_at(text: str, at: int, piece: str) -> str:
    return text[:at] + piece + text[at:]


def _bare_at(rng: random.Random) -> str:
    image = valid_reference(rng)
    return rng.choice([_insert(rng, image, "@"), image + "@", "@" + image, image.replace("@", "@@")])


def _over_long(rng: random.Random) -> str:
    host = ".".join(_run(rng, LOWER, 63, 63) for _ in range(4))  # 255 characters
    choices = [
        "a/" * 128 + "a",  # path of 257
        _run(rng, LOWER, 256, 256) + "/x",  # a one-label host of 256: Go's host has no bound
        "library/" + _run(rng, LOWER, 248, 248),  # 256 with the library/ Go adds itself
        _run(rng, LOWER, 248, 248),  # a familiar name whose library/ takes it to 256
        "foo:" + "t" * 129,
        f"{host}/x",
        f"{host[:253]}/x",  # exactly 253: valid
        f"example.com:{rng.randint(100000, 9999999)}/x",
        f"example.com:{'0' * rng.randint(5, 8)}/x",
        "nginx@sha256:" + "a" * rng.choice((63, 65, 128)),
        "nginx@sha512:" + "a" * rng.choice((127, 129, 200)),
        "x" * rng.randint(781, 5000),
        "a-" * rng.randint(400, 15000) + "a.com:/x",
        f"{_run(rng, LOWER, 200, 300)}.com/{'p/' * 120}p:{'t' * 128}",
    ]
    return rng.choice(choices)


def _edit(rng: random.Random) -> str:
    image = valid_reference(rng)
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, max(len(image) - 1, 0))
        action = rng.random()
        if action < 0.4:
            image = image[:at] + rng.choice(GRAMMAR) + image[at:]
        elif action < 0.7:
            image = image[:at] + image[at + 1 :]
        else:
            image = image[:at] + rng.choice(GRAMMAR) + image[at + 1 :]
    return image


def _fuzz(rng: random.Random) -> str:
    return _run(rng, GRAMMAR, 0, 24)


NEAR_MISSES: dict[str, Callable[[random.Random], str]] = {
    "whitespace and control characters": _whitespace,
    "look-alike Unicode": _look_alike,
    "empty components": _empty_component,
    "upper case": _upper_case,
    "leading separator": _leading_dash,
    "bare @": _bare_at,
    "over-long parts": _over_long,
}


def corpus(seed: int, *, valid: int = 6000, edits: int = 6000, fuzz: int = 4000) -> dict[str, list[str]]:
    """Strings by class; every class is deterministic for the seed."""
    rng = random.Random(seed)
    classes: dict[str, list[str]] = {
        "valid": [valid_reference(rng) for _ in range(valid)],
        "every maximum at once": [every_maximum(rng) for _ in range(50)],
    }
    for name, make in NEAR_MISSES.items():
        classes[name] = [make(rng) for _ in range(PER_CLASS)]
    classes["random edits"] = [_edit(rng) for _ in range(edits)]
    classes["fuzz"] = [_fuzz(rng) for _ in range(fuzz)]
    return classes
