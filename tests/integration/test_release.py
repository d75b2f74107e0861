"""The release workflow's local halves: versions in step, `helm package` as it runs it, the SBOM from the lock.

The workflow itself needs GitHub and GHCR; `make lint` runs actionlint on it. Here its own shell lines are
taken from .github/workflows/release.yml and run, so a change to them is tested as written.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests.support import require_binary

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
DEFAULT_REPOSITORY = "ghcr.io/ecr-pullthrough/ecr-pullthrough"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def workflow() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(WORKFLOW.read_text())
    return document


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def step_script(job: str, containing: str) -> str:
    [script] = [step["run"] for step in steps(job) if containing in step.get("run", "")]
    return str(script)


def test_the_package_the_dockerfile_and_the_chart_name_one_version() -> None:
    chart = yaml.safe_load((ROOT / "chart" / "Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "chart" / "values.yaml").read_text())
    dockerfile = re.search(r"^ARG VERSION=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert dockerfile
    assert chart["appVersion"] == dockerfile[1] == VERSION
    assert values["image"] == {**values["image"], "repository": DEFAULT_REPOSITORY, "tag": ""}


def test_the_workflow_checks_the_versions_against_the_tag(tmp_path: Path) -> None:
    script = step_script("image", "GITHUB_REF_NAME")

    def run_with(tag: str) -> subprocess.CompletedProcess[str]:
        output = tmp_path / "output"
        output.write_text("")
        return subprocess.run(
            ["bash", "-eo", "pipefail", "-c", script],
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", "GITHUB_REF_NAME": tag, "GITHUB_OUTPUT": str(output)},
            capture_output=True,
            text=True,
            check=False,
        )

    released = run_with(f"v{VERSION}")
    assert released.returncode == 0, released.stdout + released.stderr
    assert (tmp_path / "output").read_text() == f"version={VERSION}\n"
    assert run_with("v99.0.0").returncode == 1


def test_the_workflow_builds_both_architectures_signs_and_attests_the_sbom() -> None:
    document = workflow()
    assert document[True]["push"]["tags"] == ["v*.*.*"]  # YAML 1.1 reads the key `on` as True
    [build] = [step for step in steps("image") if step.get("uses", "").startswith("docker/build-push-action@")]
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["push"] is True
    assert document["jobs"]["image"]["permissions"]["id-token"] == "write"
    signing = step_script("image", "cosign sign")
    assert '--type cyclonedx --predicate sbom.cdx.json "${IMAGE}@${DIGEST}"' in signing
    assert document["env"]["IMAGE"] == "ghcr.io/${{ github.repository_owner }}/ecr-pullthrough"
    # The bases the release resolves to digests are the Dockerfile's defaults.
    dockerfile = (ROOT / "Dockerfile").read_text()
    for name in ("BUILDER_IMAGE", "RUNTIME_IMAGE"):
        assert f"ARG {name}={document['env'][name]}\n" in dockerfile


def test_helm_package_as_the_workflow_runs_it_defaults_to_the_pushed_image(tmp_path: Path) -> None:
    helm = require_binary("helm")
    work = tmp_path / "work"
    shutil.copytree(ROOT / "chart", work / "chart")
    fork = "ghcr.io/a-fork/ecr-pullthrough"
    # The packaging lines of the chart job, up to the push (which needs GHCR).
    lines = step_script("chart", "helm package").splitlines()
    script = "\n".join(lines[: next(i for i, line in enumerate(lines) if "helm package" in line) + 1])
    path = f"{helm.parent}:/usr/bin:/bin"
    env = {"PATH": path, "VERSION": VERSION, "IMAGE": fork, "HOME": str(tmp_path)}
    done = subprocess.run(["bash", "-eo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr

    [package] = (work / "dist").glob("ecr-pullthrough-*.tgz")
    with tarfile.open(package) as archive:
        member = archive.extractfile("ecr-pullthrough/Chart.yaml")
        assert member is not None
        chart = yaml.safe_load(member.read())
    assert chart["appVersion"] == VERSION
    assert package.name == f"ecr-pullthrough-{chart['version']}.tgz"
    rendered = subprocess.run(
        [str(helm), "template", "r", str(package), "--set", f"registry={REGISTRY}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    images = {
        container["image"]
        for doc in yaml.safe_load_all(rendered)
        if doc and doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
    }
    assert images == {f"{fork}:{VERSION}"}


def test_the_sbom_lists_exactly_the_locked_packages(tmp_path: Path) -> None:
    command = next(
        line.strip() for line in step_script("image", "cyclonedx-py").splitlines() if "cyclonedx-py " in line
    )
    # The workflow runs it in the checkout: the lock beside it is all it reads.
    shutil.copy(ROOT / "requirements.lock", tmp_path)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    sbom = json.loads((tmp_path / "sbom.cdx.json").read_text())
    locked = set(re.findall(r"^([A-Za-z0-9][\w.-]*)==(\S+)", (ROOT / "requirements.lock").read_text(), re.M))
    assert sbom["bomFormat"] == "CycloneDX"
    assert {(component["name"], component["version"]) for component in sbom["components"]} == locked
    assert all(component["purl"].startswith("pkg:pypi/") for component in sbom["components"])
