"""The README's configuration tables name every setting each command accepts."""

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from webhook.settings import (
    ControllerSettings,
    DoctorSettings,
    RemovePullSecretsSettings,
    ScanSettings,
    WebhookSettings,
)

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize(
    "model", [WebhookSettings, ControllerSettings, ScanSettings, RemovePullSecretsSettings, DoctorSettings]
)
def test_every_setting_is_documented(model: type[BaseSettings]) -> None:
    missing = [name for name in model.model_fields if f"`--{name.replace('_', '-')}`" not in README]
    assert missing == [], "document these settings in the README's configuration tables"


def test_the_two_newcomer_commands_are_there() -> None:
    assert "make demo" in README
    assert "make test" in README
