"""Install the node test bed's Debian packages when they are missing (containerd, runc, docker-registry).

The kubelet and crane come from tests/controlplane/build.py (Go module
proxy); these three come from Debian. CI runs as root on a fresh machine, so
`make node-bed` installs whatever is absent; a machine that has them installs
nothing. Only the named executables are looked for: no other tool found on the
machine (a `kubectl`, a `docker`) is relied upon.

`--image` installs the image test's packages instead (buildah, debootstrap; `make image-bed`).

Usage: python tests/node/install.py [--image]   (standard library only: runs before the virtualenv)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence

# executable -> the Debian package that ships it
PACKAGES: dict[str, str] = {
    "containerd": "containerd",
    "runc": "runc",  # not crun: Debian's crun refuses this machine's hybrid cgroups
    "docker-registry": "docker-registry",  # the distribution registry, standing in for Docker Hub
}
# The image test (tests/image) and `make image`: a daemonless image builder, and the local bases' maker.
IMAGE_PACKAGES: dict[str, str] = {"buildah": "buildah", "debootstrap": "debootstrap"}
# runc lives in /usr/sbin, which a non-login PATH may lack.
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])

Which = Callable[[str], str | None]
Run = Callable[[Sequence[str]], int]


def find(executable: str) -> str | None:
    return shutil.which(executable, path=SEARCH_PATH)


def missing_packages(which: Which = find, packages: dict[str, str] | None = None) -> list[str]:
    """The Debian packages whose executable is not found, in a stable order."""
    wanted = PACKAGES if packages is None else packages
    return sorted({package for executable, package in wanted.items() if which(executable) is None})


def plan(missing: Sequence[str], *, is_root: bool) -> list[list[str]]:
    """The commands that install `missing`: none when nothing is missing; apt as root only."""
    if not missing:
        return []
    if not is_root:
        raise SystemExit(
            f"the node tests need the Debian packages {', '.join(missing)}: "
            f"run `apt-get install {' '.join(missing)}` as root (CI runs as root and installs them itself)"
        )
    return [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
    ]


def _run(command: Sequence[str]) -> int:
    environment = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run(list(command), env=environment, check=False).returncode


def install(
    which: Which = find, run: Run = _run, *, is_root: bool | None = None, packages: dict[str, str] | None = None
) -> list[str]:
    """Install what is missing; return the packages installed. Fails if anything is still missing after."""
    missing = missing_packages(which, packages)
    for command in plan(missing, is_root=os.geteuid() == 0 if is_root is None else is_root):
        status = run(command)
        if status != 0:
            raise SystemExit(f"`{' '.join(command)}` failed with status {status}")
    still = missing_packages(which, packages)
    if still:
        raise SystemExit(f"still missing after installing: {', '.join(still)}")
    return missing


def main(argv: Sequence[str] = ()) -> int:
    image = "--image" in argv
    packages = IMAGE_PACKAGES if image else PACKAGES
    tests = "image test" if image else "node tests"
    missing = missing_packages(packages=packages)
    if missing and os.geteuid() != 0 and os.environ.get("CI") != "true":
        # Not root, not CI: those tests skip themselves without root anyway.
        print(f"not installing {', '.join(missing)} without root; the {tests} will be skipped", file=sys.stderr)
        return 0
    installed = install(packages=packages)
    print(f"installed: {', '.join(installed)}" if installed else f"{', '.join(packages.values())}: present")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
