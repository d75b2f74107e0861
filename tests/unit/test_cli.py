import pytest

from tests.strategies import REGISTRY
from webhook.cli import main


def test_rewrite_prints_one_line_per_image(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["rewrite", "--registry", REGISTRY, "nginx:1.27", "ghcr.io/a/b", f"nginx@sha256:{'a' * 64}"])
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert lines[0] == ["nginx:1.27", f"{REGISTRY}/docker-hub/library/nginx:1.27", "rewritten"]
    assert lines[1] == ["ghcr.io/a/b", "ghcr.io/a/b", "other-registry (ghcr.io)"]
    assert lines[2][1:] == [
        f"nginx@sha256:{'a' * 64}",
        "digest-pinned (a first pull by digest is not imported by ECR pull-through)",
    ]


def test_rewrite_exits_1_on_an_invalid_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rewrite", "--registry", REGISTRY, "nginx", "Bad:Ref"]) == 1
    assert capsys.readouterr().out.splitlines()[1].startswith("Bad:Ref\tBad:Ref\tinvalid-reference (")


def test_a_bad_setting_stops_with_its_flag_and_variable(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["rewrite", "--registry", REGISTRY, "--digest-policy", "sometimes", "nginx"])
    assert exit_.value.code == 2
    error = capsys.readouterr().err
    assert "invalid setting --digest-policy (ECR_PULLTHROUGH_DIGEST_POLICY)" in error


def test_webhook_requires_readable_tls_files(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["webhook", "--registry", REGISTRY, "--tls-cert", "/nonexistent.crt", "--tls-key", "/nonexistent.key"])
    assert (
        "invalid setting --tls-cert (ECR_PULLTHROUGH_TLS_CERT): /nonexistent.crt is not a readable file"
        in capsys.readouterr().err
    )


def test_usage_and_unknown_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "commands:" in capsys.readouterr().out
    assert main(["launch"]) == 2
    assert "unknown command 'launch'" in capsys.readouterr().err
