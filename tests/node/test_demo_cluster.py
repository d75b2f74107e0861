"""`make demo-cluster --once` (DEMO_ARGS=--once): the whole product comes up, prints what it promises, and stops
everything it started. It brings up a bed of its own, so it runs in a private namespace of its own, apart from
the other node tests (`make test-node` enters one for each); about 12 s warm."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.bed import CONTAINERD_SOCKET
from tests.node.enter import ECR_HOST

REWRITTEN = f"{ECR_HOST}/docker-hub"


def processes_in_this_network() -> set[int]:
    """Every process of this private network namespace but this one and its ancestors."""
    own = os.readlink("/proc/self/ns/net")
    keep, pid = set(), os.getpid()
    while pid > 1:
        keep.add(pid)
        with open(f"/proc/{pid}/stat") as stat:
            pid = int(stat.read().rsplit(")", 1)[1].split()[1])
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in keep:
            try:
                if os.readlink(f"/proc/{entry}/ns/net") == own:
                    found.add(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
    return found


def test_the_demo_shows_each_decision_the_secret_redacted_and_every_phase_then_stops_everything(
    tmp_path: Path,
) -> None:
    if Path(CONTAINERD_SOCKET).exists():
        pytest.fail("a node bed is already running here: this test runs in its own `python -m tests.node.enter`")
    scratch = tmp_path / "tmp"  # where the demo's folders go (TMPDIR): /tmp is shared with other runs
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tests.node.demo", "--once"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=dict(os.environ, TMPDIR=str(scratch)),
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    images = output.split("before and after the webhook:")[1].split("The pull Secret")[0]
    rows = {line.split()[0]: line.split() for line in images.splitlines() if line.startswith("  ")}
    assert rows["official"][2:5] == ["hello:1", f"{REWRITTEN}/library/hello:1", "rewritten"]
    assert rows["organisation"][2:5] == ["someorg/hello:1", f"{REWRITTEN}/someorg/hello:1", "rewritten"]
    assert rows["digest-pinned"][3:5] == ["(unchanged)", "digest-pinned"]
    assert rows["quay"][2:6] == ["quay.io/prometheus/busybox:latest", "(unchanged)", "other-registry", "(quay.io)"]
    assert "not sent to the webhook: the pod is labelled ecr-pullthrough/skip=true" in output
    assert '"password": "<redacted: ' in output
    assert "fake-ecr-password" not in output, "a token reached the output"
    assert "  docker.io: verified (registry " in output
    table = output.split("Each pod's phase")[1].split("all of it took")[0]
    lines = {line.split()[0]: line.split(maxsplit=2) for line in table.splitlines()[2:] if line.strip()}
    phases = {name: words[1] for name, words in lines.items()}
    assert phases == {
        "official": "Succeeded",
        "organisation": "Succeeded",
        "digest-pinned": "Succeeded",  # pulled from the Docker Hub stand-in directly, by digest
        "quay": "Pending",  # quay.io cannot be reached offline: left alone, it fails as it would without us
        "opted-out": "Succeeded",
    }
    assert lines["official"][2].endswith("the ECR stand-in, as AWS with fake-ECR token #1")
    assert lines["organisation"][2].endswith("the ECR stand-in, as AWS with fake-ECR token #1")
    assert lines["opted-out"][2].endswith("not the cache: docker.io directly")
    # Stopped everything it started: no process left in this namespace, no folder left behind.
    assert processes_in_this_network() == set()
    assert not Path(CONTAINERD_SOCKET).exists()
    assert list(scratch.iterdir()) == []
