"""The node tests run only inside the node test bed's namespace (`make test-node`), and there they never skip.

Elsewhere (a plain `pytest`, `make test`) they are skipped with the command that runs them:
they need root, a private network and mount namespace, and the kubelet.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from tests.node.bed import NodeBed, node_bed
from tests.node.enter import INSIDE

HERE = Path(__file__).parent
_BED = pytest.StashKey[NodeBed]()
TAIL = 8000


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    outside = pytest.mark.skip(reason="node test: run `make test-node` (root; a private network namespace)")
    for item in items:
        if item.path.is_relative_to(HERE) and item.path.name.startswith("test_"):
            item.add_marker(pytest.mark.node)
            if not os.environ.get(INSIDE):
                item.add_marker(outside)


@pytest.fixture(scope="session")
def bed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeBed]:
    with node_bed(tmp_path_factory.mktemp("node")) as running:
        request.config.stash[_BED] = running
        yield running
        del request.config.stash[_BED]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    running = item.config.stash.get(_BED, None)
    if report.failed and running is not None:
        report.sections.append(("kubelet log (tail)", running.kubelet_log()[-TAIL:]))
        report.sections.append(("containerd log (tail)", running.containerd_log()[-TAIL:]))
        report.sections.append(("controller log (tail)", running.controller.log()[-TAIL:]))
    return report
