"""The Dockerfile's rules, read from the file, and its install steps replayed without a container engine.

The builder stage's COPY and RUN lines are replayed in order into a fresh virtualenv (its RUN lines may only
call docker/install.sh, so this runs exactly what the image runs; the `system` step, which apt-gets Python
into a bare Debian, is the builder base's business), then the command is started the way the final stage
starts it. The final stage's rules are checked by reading the Dockerfile, and requirements.lock against
pyproject.toml. Installing downloads the locked wheels (or takes them from pip's cache). The image itself is
built and run by tests/image/test_image_build.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.strategies import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
IMAGE_VENV = "/opt/venv"
# What `$PATH` is in the base image before the final stage prepends the venv.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Registries of Docker Hub: a base from one of them is pulled under its rate limit.
DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}
# pip-compile's annotation of a package that pyproject.toml asks for by name.
DECLARED = "ecr-pullthrough (pyproject.toml)"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def read_stages(text: str) -> tuple[list[Instruction], list[list[Instruction]]]:
    """The global ARGs, then each stage's instructions from its FROM; comments and continuations resolved."""
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    preamble: list[Instruction] = []
    stages: list[list[Instruction]] = []
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        if not line.strip():
            continue
        keyword, _, arguments = line.strip().partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if not stages:
            assert keyword.upper() == "ARG", f"only ARG may come before the first FROM: {line}"
            preamble.append(Instruction("ARG", arguments.strip()))
            continue
        stages[-1].append(Instruction(keyword.upper(), arguments.strip()))
    return preamble, stages


GLOBAL_ARGS, (BUILDER, FINAL) = read_stages((ROOT / "Dockerfile").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def arguments(stage: list[Instruction], keyword: str) -> list[str]:
    return [instruction.arguments for instruction in stage if instruction.keyword == keyword]


def pairs(words: str) -> dict[str, str]:
    """`ENV` and `LABEL` arguments: NAME=value pairs, quoted as in a shell."""
    found = {}
    for word in shlex.split(words):
        name, equals, value = word.partition("=")
        assert equals, f"{word!r}: write NAME=value"
        found[name] = value
    return found


def copied_sources(stage: list[Instruction]) -> list[tuple[list[str], str]]:
    """Each COPY of the stage as (sources in the build context, destination)."""
    copies = []
    for copy in arguments(stage, "COPY"):
        *sources, destination = shlex.split(copy)
        assert not any(source.startswith("--") for source in sources), f"COPY {copy}: the builder copies the context"
        assert destination.endswith("/"), f"COPY {copy}: copy into a folder"
        assert not destination.startswith("/"), f"COPY {copy}: copy under WORKDIR"
        copies.append((sources, destination))
    return copies


def run(command: list[str], *, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{shlex.join(command)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def replay_builder(workdir: Path, venv: Path) -> None:
    """Run the builder stage's COPY and RUN lines in order, `workdir` standing for WORKDIR and `venv` for /opt/venv."""
    copies = iter(copied_sources(BUILDER))
    for instruction in BUILDER:
        if instruction.keyword == "COPY":
            sources, destination = next(copies)
            for source in sources:
                path, target = ROOT / source, workdir / destination
                if path.is_dir():  # Docker copies a folder's contents into the destination
                    shutil.copytree(path, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    target.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, target / path.name)
        elif instruction.keyword == "RUN":
            command = shlex.split(instruction.arguments)
            assert command[:2] == ["sh", "docker/install.sh"], f"RUN {instruction.arguments}: use docker/install.sh"
            if command[2:] == ["system"]:
                continue
            assert command[-1] == IMAGE_VENV, f"RUN {instruction.arguments}: install into {IMAGE_VENV}"
            run([*command[:-1], str(venv)], cwd=workdir, env={**os.environ, "PYTHON": sys.executable})


def locked_blocks() -> dict[str, tuple[str, str]]:
    """requirements.lock as {normalised name: (version, the rest of its entry: hashes and annotations)}."""
    blocks: dict[str, tuple[str, str]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if pin := re.match(r"([A-Za-z0-9][\w.-]*)==(\S+)", line):
            name = canonicalize_name(pin[1])
            blocks[name] = (pin[2], line)
        elif name:
            version, rest = blocks[name]
            blocks[name] = (version, f"{rest}\n{line}")
    return blocks


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtualenv made by the builder stage's own steps, as /opt/venv is in the image."""
    folder = tmp_path_factory.mktemp("image")
    replay_builder(folder / "src", folder / "venv")
    return folder / "venv"


@pytest.fixture
def image_env(venv: Path, tmp_path: Path) -> dict[str, str]:
    """The final stage's environment with `venv` in place of /opt/venv; nothing inherited from this process."""
    env = {
        name: value.replace("${PATH}", BASE_PATH).replace("$PATH", BASE_PATH).replace(IMAGE_VENV, str(venv))
        for name, value in pairs(" ".join(arguments(FINAL, "ENV"))).items()
    }
    return {**env, "HOME": str(tmp_path / "nonexistent")}


def test_the_entrypoint_runs_the_installed_command(venv: Path, image_env: dict[str, str], tmp_path: Path) -> None:
    entrypoint = json.loads(arguments(FINAL, "ENTRYPOINT")[-1])
    assert shutil.which(entrypoint[0], path=image_env["PATH"]) == str(venv / "bin" / "ecr-pullthrough")
    files_before = sorted(venv.rglob("*"))

    usage = run([*entrypoint, "--help"], cwd=tmp_path, env=image_env)
    rewrite = run([*entrypoint, "rewrite", "--registry", REGISTRY, "nginx"], cwd=tmp_path, env=image_env)

    assert usage.startswith("usage: ecr-pullthrough COMMAND")
    assert rewrite == f'"nginx"\t"{REGISTRY}/docker-hub/library/nginx"\trewritten\n'
    assert sorted(venv.rglob("*")) == files_before, "running the command wrote into the venv"


def test_the_venv_holds_the_project_wheel_and_exactly_the_lock(venv: Path, image_env: dict[str, str]) -> None:
    python = str(venv / "bin" / "python")
    listing = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    installed = json.loads(run([python, "-c", listing], cwd=venv, env=image_env))
    where = run([python, "-c", "import webhook; print(webhook.__file__)"], cwd=venv, env=image_env)

    locked = {name: version for name, (version, _) in locked_blocks().items()}
    assert {canonicalize_name(name): version for name, version in installed.items()} == {
        **locked,
        "ecr-pullthrough": PYPROJECT["version"],
    }
    assert Path(where.strip()).is_relative_to(venv / "lib"), "webhook was imported from the source tree"


def test_both_bases_are_arguments_defaulting_to_debian_12_outside_docker_hub() -> None:
    defaults = dict(argument.partition("=")[::2] for argument in arguments([*GLOBAL_ARGS], "ARG"))
    assert BUILDER[0].arguments == "${BUILDER_IMAGE} AS builder"
    assert FINAL[0].arguments == "${RUNTIME_IMAGE}"
    builder, runtime = defaults["BUILDER_IMAGE"], defaults["RUNTIME_IMAGE"]
    for image in (builder, runtime):
        host = image.split("/")[0]
        assert "." in host, f"{image}: name its registry, or it is Docker Hub's"
        assert host not in DOCKER_HUB_HOSTS, f"{image}: Docker Hub's rate limit is what this product avoids"
        assert re.fullmatch(r"[\w.-]+(/[\w.-]+)+(:[\w.-]+)?(@sha256:[0-9a-f]{64})?", image), image
    # The venv's interpreter is Debian 12's /usr/bin/python3.11 in both: the same Debian release.
    assert builder.startswith("public.ecr.aws/docker/library/debian:bookworm")
    assert runtime.startswith("gcr.io/distroless/python3-debian12")
    assert runtime.endswith(":nonroot") or "@sha256:" in runtime
    assert pairs(" ".join(arguments(BUILDER, "ENV")))["PYTHON"] == "/usr/bin/python3.11"


def test_the_final_stage_is_a_numeric_user_and_the_venv() -> None:
    user = re.fullmatch(r"(\d+):(\d+)", arguments(FINAL, "USER")[-1])
    assert user, "USER uid:gid, numeric, so that runAsNonRoot can verify it"
    assert int(user[1]) != 0
    assert int(user[2]) != 0
    assert json.loads(arguments(FINAL, "ENTRYPOINT")[-1]) == ["ecr-pullthrough"]
    assert sorted(" ".join(arguments(FINAL, "EXPOSE")).split()) == ["8080", "8443"]
    assert arguments(FINAL, "COPY") == [f"--from=builder {IMAGE_VENV} {IMAGE_VENV}"]
    env = pairs(" ".join(arguments(FINAL, "ENV")))
    assert env["PATH"].startswith(f"{IMAGE_VENV}/bin:")
    assert (env["PYTHONDONTWRITEBYTECODE"], env["PYTHONUNBUFFERED"]) == ("1", "1")


def test_the_final_stage_runs_nothing() -> None:
    # A distroless base has no shell: a RUN there cannot work, and whatever the final stage
    # needs comes from the builder by COPY. The build arguments of the builder stay in it.
    assert not arguments(FINAL, "RUN")
    assert not arguments(FINAL, "ADD")
    assert "PIP_CERT" in arguments(BUILDER, "ARG")
    assert not [argument for argument in arguments(FINAL, "ARG") if argument.startswith("PIP")]


def test_the_labels_name_the_project_and_its_version() -> None:
    labels = pairs(" ".join(arguments(FINAL, "LABEL")))
    build_arguments = dict(argument.partition("=")[::2] for argument in arguments(FINAL, "ARG"))
    assert labels["org.opencontainers.image.title"] == PYPROJECT["name"]
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["license"] == "Apache-2.0"
    assert labels["org.opencontainers.image.source"].startswith(("https://", "${SOURCE}"))
    assert labels["org.opencontainers.image.description"]
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert build_arguments["VERSION"] == PYPROJECT["version"]


def test_the_build_context_keeps_what_the_builder_copies() -> None:
    ignored = [
        line.strip().removeprefix("**/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    assert {".git", ".venv"} <= set(ignored)
    for sources, _ in copied_sources(BUILDER):
        for source in sources:
            parts = Path(source).parts
            for prefix in ("/".join(parts[: end + 1]) for end in range(len(parts))):
                assert not [pattern for pattern in ignored if fnmatch(prefix, pattern)], f".dockerignore drops {source}"


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    blocks = locked_blocks()
    for dependency in map(Requirement, PYPROJECT["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in blocks, f"{name} is not in requirements.lock: run `make lock`"
        version, entry = blocks[name]
        assert dependency.specifier.contains(version, prereleases=True), f"{name}=={version} is not {dependency}"
        assert DECLARED in entry, f"{name} is in the lock only as someone's dependency: run `make lock`"
    declared = {canonicalize_name(Requirement(text).name) for text in PYPROJECT["dependencies"]}
    assert {name for name, (_, entry) in blocks.items() if DECLARED in entry} == declared, "stale lock: `make lock`"
    assert all("--hash=sha256:" in entry for _, entry in blocks.values())
    options = re.findall(r"^-.*", (ROOT / "requirements.lock").read_text(), re.M)
    assert not options, f"pip options (such as this machine's --find-links) do not belong in the lock: {options}"


def test_the_build_lock_pins_the_build_backend_with_hashes() -> None:
    """setuptools, which builds our wheel in the image, is locked like the runtime (`make lock`)."""
    text = (ROOT / "requirements-build.lock").read_text()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = dict(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", text, re.M))
    for requirement in map(Requirement, requires):
        assert requirement.name in pins, f"{requirement.name} is not in requirements-build.lock: run `make lock`"
        assert requirement.specifier.contains(pins[requirement.name]), f"{requirement} vs {pins[requirement.name]}"
    assert text.count("--hash=sha256:") >= len(pins)
    assert not re.findall(r"^-.*", text, re.M)
