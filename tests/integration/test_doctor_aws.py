"""`ecr-pullthrough doctor --check aws`: the caller's own view of the AWS side, against the fake ECR API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.fake_ecr import FakeEcr, fake_ecr

REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
ARN = "arn:aws:sts::123456789012:assumed-role/ecr-pullthrough/irsa"


@pytest.fixture
def ecr() -> Iterator[FakeEcr]:
    with fake_ecr() as fake:
        yield fake


def doctor(ecr: FakeEcr, *args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "ECR_PULLTHROUGH_"))}
    environment.update(ecr.environment())
    command = [sys.executable, "-m", "webhook", "doctor", "--registry", REGISTRY, "--check", "aws", "--output", "json"]
    done = subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, check=False, env=environment)
    results = {r["name"]: r for r in json.loads(done.stdout)["results"]}
    return done.returncode, results


def test_the_rules_as_this_caller_sees_them(ecr: FakeEcr) -> None:
    code, results = doctor(ecr, "--upstreams", "ghcr.io=github,quay.io=quay")
    assert code == 0, results
    assert (
        results[f"AWS identity as {ARN}"]["message"] == f"region us-east-1, registry {REGISTRY} (account 123456789012)"
    )
    assert {name for name, r in results.items() if r["status"] == "pass"} == {
        f"AWS identity as {ARN}",
        f"rule docker-hub for docker.io as {ARN}",
        f"rule github for ghcr.io as {ARN}",
        f"rule quay for quay.io as {ARN}",
    }
    assert ecr.registry_ids == {"123456789012"}  # the configured registry's rules, named


def _no_rule(ecr: FakeEcr) -> None:
    ecr.rules.pop("docker-hub")


def _invalid_credential(ecr: FakeEcr) -> None:
    ecr.invalid_credentials.add("docker-hub")


def _other_prefix(ecr: FakeEcr) -> None:
    ecr.rules["hub"] = ecr.rules.pop("docker-hub")


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (_no_rule, "no pull-through cache rule for registry-1.docker.io: create one with"),
        (_invalid_credential, "the upstream credential of the rule docker-hub is not valid"),
        (_other_prefix, "no pull-through cache rule has the prefix docker-hub, but the rule for registry-1.docker.io"),
    ],
)
def test_a_broken_rule_fails_with_its_fix(ecr: FakeEcr, breakage: Callable[[FakeEcr], None], message: str) -> None:
    breakage(ecr)
    code, results = doctor(ecr)
    assert code == 1
    line = results[f"rule docker-hub for docker.io as {ARN}"]
    assert line["status"] == "fail"
    assert line["message"].startswith(message)
    assert line["fix"]


def test_a_caller_who_may_not_read_the_rules_gets_a_warning_naming_the_permissions(ecr: FakeEcr) -> None:
    ecr.mode = "deny"
    code, results = doctor(ecr)
    assert code == 0
    line = results[f"rule docker-hub for docker.io as {ARN}"]
    assert line["status"] == "warn"
    assert "ecr:DescribePullThroughCacheRules" in line["fix"]


def test_credentials_sts_refuses_fail_the_identity(ecr: FakeEcr) -> None:
    ecr.principals.clear()
    code, results = doctor(ecr)
    assert code == 1
    assert results["AWS identity"]["status"] == "fail"
    assert "InvalidClientTokenId" in results["AWS identity"]["message"]
