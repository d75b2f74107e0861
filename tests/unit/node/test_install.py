"""The node test bed's install step: what it installs, and when (tests/node/install.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.node import install


class Machine:
    """A machine whose executables appear once apt installs their package."""

    def __init__(self, present: set[str], *, apt_works: bool = True) -> None:
        self.present = set(present)
        self.apt_works = apt_works
        self.commands: list[list[str]] = []

    def which(self, executable: str) -> str | None:
        return f"/usr/bin/{executable}" if executable in self.present else None

    def run(self, command: Sequence[str]) -> int:
        self.commands.append(list(command))
        if not self.apt_works:
            return 100
        if command[:2] == ["apt-get", "install"]:
            known = {**install.PACKAGES, **install.IMAGE_PACKAGES}
            by_package = {package: executable for executable, package in known.items()}
            self.present |= {by_package[name] for name in command if name in by_package}
        return 0


def test_nothing_is_installed_when_everything_is_present() -> None:
    machine = Machine({"containerd", "runc", "docker-registry"})
    assert install.install(machine.which, machine.run, is_root=True) == []
    assert machine.commands == []


def test_a_fresh_machine_gets_all_three_packages_in_one_apt_call() -> None:
    machine = Machine(set())
    assert install.install(machine.which, machine.run, is_root=True) == ["containerd", "docker-registry", "runc"]
    assert machine.commands == [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "containerd", "docker-registry", "runc"],
    ]
    assert install.missing_packages(machine.which) == []


def test_only_the_missing_package_is_installed() -> None:
    machine = Machine({"containerd", "docker-registry"})
    assert install.install(machine.which, machine.run, is_root=True) == ["runc"]
    assert machine.commands[-1][-1] == "runc"


def test_without_root_it_names_the_command_instead_of_running_apt() -> None:
    machine = Machine({"runc"})
    with pytest.raises(SystemExit, match="apt-get install containerd docker-registry"):
        install.install(machine.which, machine.run, is_root=False)
    assert machine.commands == []


def test_a_failing_apt_stops_the_step() -> None:
    machine = Machine(set(), apt_works=False)
    with pytest.raises(SystemExit, match="apt-get update -qq` failed with status 100"):
        install.install(machine.which, machine.run, is_root=True)


def test_a_package_that_installs_without_its_executable_is_reported() -> None:
    machine = Machine(set())
    machine.run = lambda command: machine.commands.append(list(command)) or 0  # type: ignore[method-assign]
    with pytest.raises(SystemExit, match="still missing after installing: containerd, docker-registry, runc"):
        install.install(machine.which, machine.run, is_root=True)


def test_runc_is_found_in_sbin_even_on_a_short_path() -> None:
    assert "/usr/sbin" in install.SEARCH_PATH.split(":")


def test_the_image_packages_are_installed_apart_from_the_node_bed() -> None:
    machine = Machine(set())
    installed = install.install(machine.which, machine.run, is_root=True, packages=install.IMAGE_PACKAGES)
    assert installed == ["buildah", "debootstrap"]
    assert machine.commands[-1] == ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *installed]
    assert install.missing_packages(machine.which) == ["containerd", "docker-registry", "runc"]
