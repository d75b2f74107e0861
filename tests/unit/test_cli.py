import io
import json

import pytest

from tests.strategies import REGISTRY
from webhook.cli import main, read_images


def rewrite_lines(capsys: pytest.CaptureFixture[str]) -> list[list[object]]:
    """Each line's tab-separated columns, the JSON strings decoded."""
    return [
        [json.loads(column) if column.startswith('"') else column for column in line.split("\t")]
        for line in capsys.readouterr().out.splitlines()
    ]


def test_rewrite_prints_one_line_per_image(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["rewrite", "--registry", REGISTRY, "nginx:1.27", "ghcr.io/a/b", f"nginx@sha256:{'a' * 64}"])
    lines = rewrite_lines(capsys)
    assert status == 0
    assert lines[0] == ["nginx:1.27", f"{REGISTRY}/docker-hub/library/nginx:1.27", "rewritten"]
    assert lines[1] == ["ghcr.io/a/b", "ghcr.io/a/b", "other-registry", "ghcr.io"]
    assert lines[2][1:] == [
        f"nginx@sha256:{'a' * 64}",
        "digest-pinned",
        "a first pull by digest is not imported by ECR pull-through",
    ]


def test_rewrite_exits_1_on_an_invalid_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rewrite", "--registry", REGISTRY, "nginx", "Bad:Ref"]) == 1
    assert rewrite_lines(capsys)[1][:3] == ["Bad:Ref", "Bad:Ref", "invalid-reference"]


# Each of these went through the settings library's list parsing, which stripped, split, unquoted or
# JSON-decoded it, dropped it, or ended in a traceback with no output at all.
VERBATIM = ["nginx:1.27 ", "nginx,redis", '"nginx"', "[::1]:5000/foo", "{x}", "true", "null", "None", "", "nginx\n"]


def test_rewrite_decides_every_image_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["rewrite", "--registry", REGISTRY, "nginx", *VERBATIM])
    lines = rewrite_lines(capsys)
    assert [line[0] for line in lines] == ["nginx", *VERBATIM]
    assert [line[2] for line in lines] == [
        "rewritten", "invalid-reference", "invalid-reference", "invalid-reference", "other-registry",
        "invalid-reference", "rewritten", "rewritten", "invalid-reference", "invalid-reference", "invalid-reference",
    ]  # fmt: skip
    assert status == 1


def test_after_a_double_dash_nothing_is_an_option(capsys: pytest.CaptureFixture[str]) -> None:
    main(["rewrite", "--registry", REGISTRY, "--", "--registry", "-h", "nginx"])
    assert [line[:3] for line in rewrite_lines(capsys)] == [
        ["--registry", "--registry", "invalid-reference"],
        ["-h", "-h", "invalid-reference"],
        ["nginx", f"{REGISTRY}/docker-hub/library/nginx", "rewritten"],
    ]


def test_images_never_come_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECR_PULLTHROUGH_IMAGES", '["redis"]')
    main(["rewrite", "--registry", REGISTRY, "nginx"])
    assert [line[0] for line in rewrite_lines(capsys)] == ["nginx"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"nginx\nredis:7\n", ["nginx", "redis:7"]),
        (b"nginx\nredis:7", ["nginx", "redis:7"]),
        (b"a b\nc\0\0d\0", ["a b\nc", "", "d"]),  # a NUL anywhere makes NUL the separator
        (b"", []),
    ],
)
def test_stdin_is_read_per_line_or_per_nul(data: bytes, expected: list[str]) -> None:
    assert read_images(data) == expected


def test_json_output_and_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"busybox\0bad image\tx\0")))
    assert main(["rewrite", f"--registry={REGISTRY}", "--stdin", "--output", "json", "nginx"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(r["image"], r["reason"]) for r in records] == [
        ("nginx", "rewritten"),
        ("busybox", "rewritten"),
        ("bad image\tx", "invalid-reference"),
    ]
    assert records[0]["result"] == f"{REGISTRY}/docker-hub/library/nginx"


@pytest.mark.parametrize(
    ("args", "message"), [(["--output", "xml"], "--output is text or json"), (["--prefix"], "--prefix needs a value")]
)
def test_bad_rewrite_flags_are_refused(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert main(["rewrite", "--registry", REGISTRY, "nginx", *args]) == 2
    assert message in capsys.readouterr().err


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
