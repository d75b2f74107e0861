"""Differential test: our image-reference parser and decision against Docker's own parser.

The oracle is `github.com/distribution/reference`'s `ParseNormalizedNamed` (Docker, containerd
and the kubelet use it), compiled from the Go module proxy by `tests/controlplane/build.py`
(`reference-oracle`). Every string of a seeded corpus goes to the oracle, to `images.parse` and
`decide()` in process, and, batched through `--stdin`, to the `ecr-pullthrough rewrite` command.
Every difference is a failure unless it is one of INTENTIONAL below.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import reference_corpus
from tests.strategies import REGISTRY
from tests.support import require_binary
from webhook.core import images
from webhook.core.rewrite import ECR_HOST, Decision, Reason, RewriteRules, decide

SEED = 20261130
RULES = RewriteRules(registry=REGISTRY, digest_policy="rewrite")

# Where we differ from Go on purpose, and why. Each is counted: a class no string exercises is a gap.
INTENTIONAL = {
    "registry-1.docker.io is Docker Hub": "it is Hub's registry host and the upstream an ECR rule names; "
    "Go keeps it as another registry and adds no library/",
    "host longer than 253 characters": "no DNS name is longer; Go bounds only the path",
    "port longer than 5 digits": "no port has more; Go accepts any number of digits",
}


@dataclass(frozen=True)
class Expected:
    """What our parser must say, given Go's answer: a reference, or invalid (with the intentional reason)."""

    reference: tuple[str, str, str | None, str | None] | None
    intentional: str = ""


def expected_from(oracle: dict[str, Any]) -> Expected:
    if not oracle["ok"]:
        return Expected(None)
    domain, path = oracle.get("domain", ""), oracle["path"]
    host, port = _host_and_port(domain)
    if len(host) > images.MAX_HOST_LENGTH:
        return Expected(None, "host longer than 253 characters")
    if port is not None and len(port) > images.MAX_PORT_DIGITS:
        return Expected(None, "port longer than 5 digits")
    intentional = ""
    if domain == images.DOCKER_HUB_REGISTRY:
        intentional = "registry-1.docker.io is Docker Hub"
        domain, path = images.DOCKER_HUB, path if "/" in path else f"library/{path}"
        if len(path) > images.MAX_PATH_LENGTH:
            return Expected(None, intentional)
    return Expected((domain, path, oracle.get("tag"), oracle.get("digest")), intentional)


def _host_and_port(domain: str) -> tuple[str, str | None]:
    if domain.startswith("["):
        host, _, rest = domain.partition("]")
        return host + "]", rest[1:] if rest else None
    host, colon, port = domain.partition(":")
    return host, port if colon else None


def expected_decision(image: str, expected: Expected) -> tuple[str, Reason]:
    if expected.reference is None:
        return image, Reason.INVALID_REFERENCE
    domain, path, tag, digest = expected.reference
    if ECR_HOST.match(domain):
        return image, Reason.ALREADY_ECR
    if domain != images.DOCKER_HUB:
        return image, Reason.OTHER_REGISTRY
    if len(f"docker-hub/{path}") > images.MAX_PATH_LENGTH:
        return image, Reason.PATH_TOO_LONG
    suffix = (f":{tag}" if tag is not None else "") + (f"@{digest}" if digest is not None else "")
    return f"{REGISTRY}/docker-hub/{path}{suffix}", Reason.REWRITTEN


def ask_oracle(strings: list[str]) -> list[dict[str, Any]]:
    oracle = require_binary("reference-oracle")
    lines = "".join(json.dumps(s) + "\n" for s in strings)
    done = subprocess.run([oracle], input=lines.encode(), capture_output=True, check=True, timeout=120)
    answers = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(answers) == len(strings), done.stderr.decode()
    return answers


@pytest.fixture(scope="module")
def compared() -> list[tuple[str, str, dict[str, Any], Expected, Decision]]:
    """(class, string, Go's answer, what we must say, our decision) for the whole corpus."""
    classes = reference_corpus.corpus(SEED)
    rows = [(name, s) for name, strings in classes.items() for s in strings]
    answers = ask_oracle([s for _, s in rows])
    return [
        (name, s, answer, expected_from(answer), decide(s, RULES))
        for (name, s), answer in zip(rows, answers, strict=True)
    ]


def _our_reference(image: str) -> tuple[str, str, str | None, str | None] | None:
    try:
        parsed = images.parse(image)
    except images.InvalidReferenceError:
        return None
    return parsed.domain, parsed.path, parsed.tag, parsed.digest


def test_the_corpus_is_large_and_covers_every_class(
    compared: list[tuple[str, str, dict[str, Any], Expected, Decision]],
) -> None:
    assert len(compared) >= 20_000
    per_class = Counter(name for name, *_ in compared)
    for name in reference_corpus.NEAR_MISSES:
        assert per_class[name] >= 500, name
    valid = Counter(name for name, _, answer, *_ in compared if answer["ok"])
    assert valid["valid"] >= 5000
    assert valid["every maximum at once"] == 50
    domains = {answer.get("domain", "") for _, _, answer, *_ in compared if answer["ok"]}
    assert "localhost" in domains
    assert any(d.startswith("[") for d in domains)
    assert any(":" in d and not d.startswith("[") for d in domains)
    exercised = Counter(expected.intentional for *_, expected, _ in compared if expected.intentional)
    assert set(exercised) == set(INTENTIONAL), f"intentional differences exercised: {dict(exercised)}"


def test_the_parser_agrees_with_docker_on_every_string(
    compared: list[tuple[str, str, dict[str, Any], Expected, Decision]],
) -> None:
    differences = [
        (name, s, answer) for name, s, answer, expected, _ in compared if _our_reference(s) != expected.reference
    ]
    assert not differences, f"{len(differences)} differences, first: {differences[:5]}"


def test_decide_agrees_with_docker_on_every_string(
    compared: list[tuple[str, str, dict[str, Any], Expected, Decision]],
) -> None:
    differences = [
        (s, (decision.image, decision.reason), expected_decision(s, expected))
        for _, s, _, expected, decision in compared
        if (decision.image, decision.reason) != expected_decision(s, expected)
    ]
    assert not differences, f"{len(differences)} differences, first: {differences[:5]}"


def test_the_rewrite_command_prints_what_decide_decides(
    compared: list[tuple[str, str, dict[str, Any], Expected, Decision]],
) -> None:
    # argv and NUL-separated input cannot carry a NUL: those strings are decided in process above.
    batch = [(s, decision) for _, s, _, _, decision in compared if "\0" not in s]
    data = b"".join(s.encode() + b"\0" for s, _ in batch)
    command = [sys.executable, "-m", "webhook", "rewrite", "--registry", REGISTRY, "--digest-policy", "rewrite"]
    done = subprocess.run([*command, "--stdin", "--output", "json"], input=data, capture_output=True, timeout=300)
    assert done.returncode == 1, done.stderr.decode()  # the corpus holds invalid references
    printed = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert len(printed) == len(batch)
    for record, (image, decision) in zip(printed, batch, strict=True):
        assert (record["image"], record["result"], record["reason"]) == (image, decision.image, decision.reason)


def test_each_decision_takes_bounded_time(
    compared: list[tuple[str, str, dict[str, Any], Expected, Decision]],
) -> None:
    """Linear parsing with a length bound: no string of the corpus is slow (the tight figure is in make bench)."""
    worst = 0.0
    for _, s, *_ in compared:
        tries = []
        for _ in range(3):  # the best of three: a garbage collection or a busy neighbour is not the parser
            images._parse.cache_clear()
            started = time.perf_counter()
            decide(s, RULES)
            tries.append(time.perf_counter() - started)
        worst = max(worst, min(tries))
    # Measured (make bench): 0.14 ms at worst idle, 0.4 ms under load; docker-image-py took 170 ms at 30 KB.
    assert worst < 0.005, f"slowest decision {worst * 1000:.1f} ms"


def test_a_pod_of_thousands_of_containers_is_decided_in_bounded_time(tmp_path: Path) -> None:
    from webhook.core.mutate import PodPolicy, mutate_pod

    near_miss = ("a-" * 389 + "A")[: images.MAX_REFERENCE_LENGTH]
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": f"c{i}", "image": f"{near_miss[: -len(str(i))]}{i}"} for i in range(5000)]},
    }
    started = time.perf_counter()
    mutation = mutate_pod(pod, PodPolicy(rules=RULES), namespace="default")
    elapsed = time.perf_counter() - started
    assert {c.decision.reason for c in mutation.containers} == {Reason.INVALID_REFERENCE}
    assert elapsed < 5, f"5,000 near-miss containers took {elapsed:.2f} s"
