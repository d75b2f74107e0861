import pytest
from pydantic import ValidationError

from tests.strategies import REGISTRY
from webhook.settings import CommonSettings


def load(*args: str) -> CommonSettings:
    return CommonSettings(_cli_parse_args=list(args))  # type: ignore[call-arg]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ECR_PULLTHROUGH_"):
            monkeypatch.delenv(name)


def test_defaults_with_a_registry() -> None:
    settings = load("--registry", REGISTRY.upper())
    assert settings.registry_host == REGISTRY
    assert (settings.account_id, settings.region) == ("123456789012", "us-east-1")
    assert (settings.prefix, settings.digest_policy, settings.mode) == ("docker-hub", "skip", "enforce")
    assert settings.secret_name == "ecr-pullthrough"
    assert settings.exclude_namespaces == ["kube-system"]


def test_account_and_region_stand_in_for_the_registry() -> None:
    assert load("--account-id", "123456789012", "--region", "us-east-1").registry_host == REGISTRY
    china = load("--account-id", "123456789012", "--region", "cn-north-1").registry_host
    assert china == "123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn"


def test_environment_variables_and_flags_share_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECR_PULLTHROUGH_REGISTRY", REGISTRY)
    monkeypatch.setenv("ECR_PULLTHROUGH_EXCLUDE_NAMESPACES", "a, b")
    monkeypatch.setenv("ECR_PULLTHROUGH_UPSTREAMS", "ghcr.io=github,Quay.io=quay")
    monkeypatch.setenv("ECR_PULLTHROUGH_DIGEST_POLICY", "rewrite")
    settings = load("--digest-policy", "skip")
    assert settings.exclude_namespaces == ["a", "b"]
    assert settings.upstreams == {"ghcr.io": "github", "quay.io": "quay"}
    assert settings.digest_policy == "skip", "a flag wins over the environment"
    monkeypatch.setenv("ECR_PULLTHROUGH_EXCLUDE_IMAGES", '["docker.io/library/busybox"]')
    assert load().exclude_images == ["docker.io/library/busybox"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "set --registry, or --account-id and --region"),
        (("--registry", REGISTRY, "--region", "us-east-1"), "not both"),
        (("--registry", "ghcr.io"), "not a private ECR registry host"),
        (("--account-id", "12", "--region", "us-east-1"), "12 digits"),
        (("--account-id", "123456789012", "--region", "mars"), "not an AWS region"),
        (("--registry", REGISTRY, "--prefix", "X"), "2-30 lowercase"),
        (("--registry", REGISTRY, "--upstreams", "docker.io=hub"), "is Docker Hub"),
        (("--registry", REGISTRY, "--upstreams", "ghcr.io=Bad_"), "prefix 'Bad_' of ghcr.io"),
        (("--registry", REGISTRY, "--secret-name", "Not_Valid"), "Secret name"),
        (("--registry", REGISTRY, "--opt-out-label", "bad key!"), "label key"),
        (("--registry", REGISTRY, "--mode", "loud"), "'enforce' or 'audit'"),
        # globs match the normalised name, where every Hub host is docker.io: another Hub host name is refused
        (
            ("--registry", REGISTRY, "--exclude-images", "registry-1.docker.io/busybox*"),
            "write it as 'docker.io/library/busybox*'",
        ),
        (("--registry", REGISTRY, "--exclude-images", "index.docker.io/org/*"), "write it as 'docker.io/org/*'"),
        (("--registry", REGISTRY, "--exclude-images", "DOCKER.IO/library/x"), "names the Docker Hub host 'DOCKER.IO'"),
    ],
)
def test_invalid_settings_name_the_setting(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as error:
        load(*args)
    assert message in str(error.value)


def test_controller_settings_check_lease_timing_and_selectors() -> None:
    from webhook.settings import ControllerSettings

    settings = ControllerSettings(_cli_parse_args=["--registry", REGISTRY])  # type: ignore[call-arg]
    assert (settings.lease_seconds, settings.renew_deadline_seconds, settings.retry_seconds) == (15, 10, 2)
    with pytest.raises(ValidationError, match="retry_seconds < renew_deadline_seconds < lease_seconds"):
        ControllerSettings(_cli_parse_args=["--registry", REGISTRY, "--lease-seconds", "5"])  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="label selector"):
        ControllerSettings(_cli_parse_args=["--registry", REGISTRY, "--exclude-namespace-selector", "a in (b)"])  # type: ignore[call-arg]
