from collections.abc import Iterator

import pytest

from tests.fake_ecr import FakeEcr, fake_ecr


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeEcr]:
    """The fake ECR endpoint, with boto3's environment pointed at it."""
    with fake_ecr() as endpoint:
        for name, value in endpoint.environment().items():
            monkeypatch.setenv(name, value)
        yield endpoint
