"""Log levels: `--log-level` reaches our loggers only; libraries that see credentials stay quiet."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from webhook import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    names = ("", logs.OURS, *logs.QUIET)
    saved = {name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in names}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


def test_debug_applies_to_our_loggers_only() -> None:
    logs.configure("debug")
    assert logging.getLogger("ecr_pullthrough.controller").getEffectiveLevel() == logging.DEBUG
    for name in ("botocore.parsers", "botocore.endpoint", "urllib3.connectionpool", "kubernetes.client.rest"):
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING, name
    assert logging.getLogger("some.other.library").getEffectiveLevel() == logging.INFO


def test_a_stricter_level_applies_to_every_logger() -> None:
    logs.configure("error")
    assert logging.getLogger("ecr_pullthrough.webhook").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("botocore").getEffectiveLevel() == logging.ERROR
    assert logging.getLogger("uvicorn.error").getEffectiveLevel() == logging.ERROR
