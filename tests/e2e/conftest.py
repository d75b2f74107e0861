"""Fixtures for the end-to-end suite: a local control plane shared by the whole session."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.e2e.controlplane import ControlPlane
from tests.support import require_binary

HERE = Path(__file__).parent
LOG_LINES_ON_FAILURE = 60
_CONTROL_PLANE = pytest.StashKey[ControlPlane]()


@pytest.fixture(scope="session")
def control_plane(request: pytest.FixtureRequest) -> Iterator[ControlPlane]:
    plane = ControlPlane(require_binary("etcd"), require_binary("kube-apiserver"))
    plane.start()  # a failed start stops what it started
    request.config.stash[_CONTROL_PLANE] = plane
    yield plane
    del request.config.stash[_CONTROL_PLANE]
    plane.stop()


@pytest.fixture(scope="session")
def helm() -> Path:
    return require_binary("helm")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees every collected item, not only this folder's.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    plane = item.config.stash.get(_CONTROL_PLANE, None)
    if report.failed and plane is not None:
        tail = plane.apiserver_log_tail(LOG_LINES_ON_FAILURE)
        report.sections.append((f"kube-apiserver log (last {LOG_LINES_ON_FAILURE} lines)", tail))
    return report
