"""Build (or find) the two local base images the image test builds the Dockerfile on.

Docker Hub and GHCR cannot be reached here, so the Dockerfile's two bases are made from Debian's
packages and passed to it as build arguments:

- `builder.tar`: `debootstrap --variant=minbase` of Debian with python3, python3-venv and the CA
  bundle, standing in for `debian:bookworm-slim` after the builder's `install.sh system` step.
- `runtime.tar`: what a distroless Python base is, made the way distroless makes it: only the files
  of the packages Debian's python3.11 needs (the dependency closure of python3.11-minimal and
  libpython3.11-stdlib, read from dpkg's database), plus /etc/passwd with `nonroot` (65532), the CA
  bundle and /tmp. No shell, no coreutils, no dpkg, apt or pip: `build()` refuses a closure that
  brings one in. Its interpreter is /usr/bin/python3.11, as in gcr.io/distroless/python3-debian12.

Both are cached outside the repository, keyed by Debian suite and the version below (bump it when
this file changes what goes in):

    ~/.cache/ecr-pullthrough/image-base/<suite>-<BASE_VERSION>/{builder,runtime}.tar

A cold build takes about a minute (51 s measured: debootstrap downloads the packages); needs root.

`--import` also makes them images in buildah's storage (`make image-local` builds on them):

    localhost/ecr-pullthrough-base:builder-<suite>-<BASE_VERSION>
    localhost/ecr-pullthrough-base:runtime-<suite>-<BASE_VERSION>

Usage: python tests/image/base.py [--import [BUILDAH COMMAND]]   (standard library only; prints the paths or images)
"""

from __future__ import annotations

import fcntl
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
BASE_VERSION = "1"
CACHE = Path(os.environ.get("ECR_PULLTHROUGH_CACHE", Path.home() / ".cache" / "ecr-pullthrough")) / "image-base"

BUILDER_PACKAGES = ("python3", "python3-venv", "ca-certificates", "netbase")
# The runtime's roots; everything else comes from their Depends and Pre-Depends.
RUNTIME_ROOTS = ("python3.11-minimal", "libpython3.11-stdlib", "netbase")
# Never in the runtime: a closure that reaches one of these is a mistake to fix, not to ship.
FORBIDDEN = frozenset({"bash", "dash", "coreutils", "dpkg", "apt", "perl-base", "python3-pip", "debconf"})
# Dependencies of maintainer scripts only (readline-common's `dpkg | install-info` installs its info page):
# no script runs in an image built without a package manager, as distroless leaves them out too.
SCRIPT_ONLY = frozenset({"dpkg", "install-info", "debconf", "debconf-2.0"})
# Documentation and translations are not needed to run; copyright files are kept.
DROPPED = re.compile(r"^/usr/share/(man|info|lintian|locale|bug)/|^/usr/share/doc/.*(?<!/copyright)$")
NONROOT = 65532
PASSWD = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = f"root:x:0:\nnonroot:x:{NONROOT}:\n"


def cache_dir() -> Path:
    return CACHE / f"{SUITE}-{BASE_VERSION}"


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result.stdout


def _dpkg(root: Path, *args: str) -> str:
    return _run(["dpkg-query", f"--admindir={root}/var/lib/dpkg", *args])


def installed_packages(root: Path) -> set[str]:
    lines = _dpkg(root, "-W", "-f=${Package} ${db:Status-Status}\n").splitlines()
    return {name for name, status in (line.split() for line in lines) if status == "installed"}


def closure(root: Path, roots: tuple[str, ...]) -> set[str]:
    """The packages `roots` need: Depends and Pre-Depends, recursively; of alternatives, the first installed."""
    installed = installed_packages(root)
    needed: set[str] = set()
    pending = list(roots)
    while pending:
        package = pending.pop()
        if package in needed:
            continue
        if package not in installed:
            raise SystemExit(f"{package} is not installed in {root}")
        needed.add(package)
        fields = _dpkg(root, "-W", "-f=${Depends}, ${Pre-Depends}", package)
        for dependency in filter(None, (part.strip() for part in fields.split(","))):
            choices = [re.split(r"[\s:(]", choice.strip(), maxsplit=1)[0] for choice in dependency.split("|")]
            if set(choices) <= SCRIPT_ONLY:
                continue
            present = [choice for choice in choices if choice in installed]
            if not present:
                raise SystemExit(f"{package} needs {dependency}, which is not installed")
            pending.append(present[0])
    return needed


def _canonical(root: Path, path: str) -> str:
    """`path` with its parent folders resolved inside `root` (merged /usr: /lib/x is /usr/lib/x)."""
    parent, name = os.path.split(path)
    real_parent = os.path.realpath(root / parent.lstrip("/"))
    relative = os.path.relpath(real_parent, root)
    if relative.startswith(".."):
        raise SystemExit(f"{path} leaves the root filesystem")
    return "/" + os.path.normpath(os.path.join(relative, name)).lstrip("./")


def runtime_files(root: Path, packages: set[str]) -> list[str]:
    """Every file and symlink of `packages`, canonical paths, parents before children."""
    paths: set[str] = set()
    for package in sorted(packages):
        for path in _dpkg(root, "-L", package).splitlines():
            if not path.startswith("/") or DROPPED.search(path):
                continue
            full = root / path.lstrip("/")
            if full.is_symlink() or full.is_file():
                paths.add(_canonical(root, path))
    return sorted(paths)


def _add_text(archive: tarfile.TarFile, name: str, text: str, mode: int = 0o644) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, 0
    archive.addfile(info, io.BytesIO(data))


def _add_folder(archive: tarfile.TarFile, name: str, mode: int, owner: int = 0) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = tarfile.DIRTYPE, mode, owner, owner, 0
    archive.addfile(info)


def write_runtime(root: Path, target: Path) -> None:
    packages = closure(root, RUNTIME_ROOTS)
    forbidden = sorted(packages & FORBIDDEN)
    if forbidden:
        raise SystemExit(f"the runtime closure brings in {', '.join(forbidden)}")
    files = runtime_files(root, packages)
    folders: set[str] = set()
    for path in files:
        parent = os.path.dirname(path)
        while parent != "/":
            folders.add(parent)
            parent = os.path.dirname(parent)
    with tarfile.open(target, "w") as archive:
        # The merged-/usr links first (/lib64 holds the dynamic loader's path), then folders, then files.
        for link in ("bin", "sbin", "lib", "lib64"):
            if (root / link).is_symlink():
                archive.add(root / link, arcname=link, recursive=False)
        for folder in sorted(folders):
            archive.add(root / folder.lstrip("/"), arcname=folder.lstrip("/"), recursive=False)
        for path in files:
            archive.add(root / path.lstrip("/"), arcname=path.lstrip("/"), recursive=False)
        for folder in ("etc", "etc/ssl", "etc/ssl/certs"):
            if folder not in {name.lstrip("/") for name in folders}:
                _add_folder(archive, folder, 0o755)
        certificates = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
        _add_text(archive, "etc/ssl/certs/ca-certificates.crt", certificates)
        _add_text(archive, "etc/passwd", PASSWD)
        _add_text(archive, "etc/group", GROUP)
        archive.add(root / "etc/ld.so.cache", arcname="etc/ld.so.cache", recursive=False)
        # As in distroless: /usr/bin/python3 names the interpreter; python3-minimal itself needs dpkg.
        link = tarfile.TarInfo("usr/bin/python3")
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, "python3.11", 0
        archive.addfile(link)
        _add_folder(archive, "tmp", 0o1777)
        _add_folder(archive, "home", 0o755)
        _add_folder(archive, "home/nonroot", 0o700, NONROOT)


def build() -> tuple[Path, Path]:
    """The builder and runtime tarballs, made first if the cache lacks them."""
    folder = cache_dir()
    builder, runtime = folder / "builder.tar", folder / "runtime.tar"
    if builder.is_file() and runtime.is_file():
        return builder, runtime
    if os.geteuid() != 0:
        raise SystemExit("building the image test's base needs root (debootstrap)")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if builder.is_file() and runtime.is_file():
            return builder, runtime
        started = time.monotonic()
        print(f"debootstrapping {SUITE} for the image test's bases...", file=sys.stderr, flush=True)
        # The debootstrapped tree is kept until both tarballs are written, so a failure after it costs no download.
        root = folder / "root"
        if not (folder / "root.done").is_file():
            shutil.rmtree(root, ignore_errors=True)
            include = ",".join(BUILDER_PACKAGES)
            _run(["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(root), MIRROR])
            for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (root / leftover).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            (folder / "root.done").touch()
        write_runtime(root, runtime.with_suffix(".partial"))
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(builder.with_suffix(".partial")), "."])
        runtime.with_suffix(".partial").rename(runtime)
        builder.with_suffix(".partial").rename(builder)
        shutil.rmtree(root)
        (folder / "root.done").unlink()
        print(f"built {folder} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return builder, runtime


def image_names() -> tuple[str, str]:
    tag = f"{SUITE}-{BASE_VERSION}"
    return f"localhost/ecr-pullthrough-base:builder-{tag}", f"localhost/ecr-pullthrough-base:runtime-{tag}"


def import_images(buildah: list[str]) -> tuple[str, str]:
    """Both bases as one-layer images (`FROM scratch` + `ADD rootfs.tar /`) in `buildah`'s storage, unless there."""
    names = image_names()
    for tarball, name in zip(build(), names, strict=True):
        present = subprocess.run([*buildah, "inspect", "--type", "image", name], capture_output=True, check=False)
        if present.returncode == 0:
            continue
        container = _run([*buildah, "from", "scratch"]).strip()
        try:
            _run([*buildah, "add", container, str(tarball), "/"])
            _run([*buildah, "commit", "--quiet", container, name])
        finally:
            subprocess.run([*buildah, "rm", container], capture_output=True, check=False)
    return names


def main(argv: list[str]) -> int:
    if argv[:1] == ["--import"]:
        buildah = shlex.split(" ".join(argv[1:])) or ["buildah"]
        for name in import_images(buildah):
            print(name)
        return 0
    for path in build():
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
