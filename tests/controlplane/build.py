"""Build (or find) the control-plane binaries the end-to-end tests run.

etcd, kube-apiserver and helm (and the Go oracle of the image-reference
differential test) are built from the Go module proxy with the
machine's Go, from the wrapper modules beside this file; the wrapper go.mod
files are the one place their versions are pinned. Built binaries are cached
outside the repository, keyed by version, so a fresh clone (CI) and later
sessions reuse them:

    ~/.cache/ecr-pullthrough/controlplane/<name>-<version>/<name>

If KUBEBUILDER_ASSETS names a folder that holds `etcd` and `kube-apiserver`
(as controller-runtime's envtest does), those binaries are used instead and
nothing is built for them.

Usage: python tests/controlplane/build.py [NAME ...]   (default: all, one at a time)

Standard library only: it runs before the project's virtualenv exists.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

WRAPPERS = Path(__file__).resolve().parent / "wrappers"
CACHE = Path(os.environ.get("ECR_PULLTHROUGH_CACHE", Path.home() / ".cache" / "ecr-pullthrough")) / "controlplane"

# name -> (module whose version is pinned, package path of the main package)
COMPONENTS: dict[str, tuple[str, str]] = {
    "etcd": ("go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
    "kube-apiserver": ("k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"),
    "helm": ("helm.sh/helm/v3", "helm.sh/helm/v3/cmd/helm"),
    # The node tests (tests/node): a real kubelet at kube-apiserver's version, and
    # crane to push their offline images.
    "kubelet": ("k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kubelet"),
    "crane": ("github.com/google/go-containerregistry", "github.com/google/go-containerregistry/cmd/crane"),
    # Not control plane: the differential test's oracle for image references (our own main package).
    "reference-oracle": ("github.com/distribution/reference", "."),
    # Not control plane: the load generator of `make bench` (our own main package, standard library only).
    "loadgen": ("", "."),
}
ENVTEST_COMPONENTS = ("etcd", "kube-apiserver")
# Built from k8s.io/kubernetes: staging replaces and version ldflags.
KUBERNETES_COMPONENTS = ("kube-apiserver", "kubelet")


def pinned_version(name: str) -> str:
    module, _ = COMPONENTS[name]
    if not module:  # standard library only: the Go toolchain is its version
        return "stdlib"
    text = (WRAPPERS / name / "go.mod").read_text()
    match = re.search(rf"^require {re.escape(module)} (v\S+)$", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"{WRAPPERS / name / 'go.mod'}: no `require {module} vX.Y.Z` line")
    return match.group(1)


def binary_path(name: str) -> Path:
    """Where the binary for `name` is (or will be, once built)."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and name in ENVTEST_COMPONENTS and (Path(assets) / name).is_file():
        return Path(assets) / name
    key = f"{name}-{pinned_version(name)}"
    if COMPONENTS[name][1] == ".":  # our own source: a change to it must rebuild
        digest = hashlib.sha256()
        for source in sorted((WRAPPERS / name).iterdir()):
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
        key += f"-{digest.hexdigest()[:12]}"
    return CACHE / key / name


def _go(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local", CGO_ENABLED="0")
    result = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"go {' '.join(args)} failed in {cwd}:\n{result.stderr[-4000:]}")
    return result.stdout


def _module_gomod(module: str, version: str, cwd: Path) -> str:
    info = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], cwd))
    return Path(info["GoMod"]).read_text()


def _staging_replaces(kubernetes_gomod: str, version: str) -> list[str]:
    """`k8s.io/X => k8s.io/X v0.<minor>.<patch>` for every staging replace of k8s.io/kubernetes."""
    staging = re.findall(r"^\s*(k8s\.io/[\w.-]+) => \./staging/src/\1\s*$", kubernetes_gomod, re.MULTILINE)
    if not staging:
        raise SystemExit("k8s.io/kubernetes go.mod lists no staging replaces; has its layout changed?")
    staging_version = "v0." + version.removeprefix("v1.")
    return [f"replace {module} => {module} {staging_version}" for module in staging]


def _ldflags(name: str, version: str, workdir: Path) -> str:
    if name in KUBERNETES_COMPONENTS:
        major, minor = version.removeprefix("v").split(".")[:2]
        values = {
            "gitVersion": version,
            "gitMajor": major,
            "gitMinor": minor,
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
        }
        return " ".join(
            f"-X {package}.{key}={value}"
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for key, value in values.items()
        )
    if name == "helm":
        # Helm's Makefile derives its default Kubernetes version from client-go.
        gomod = _module_gomod("helm.sh/helm/v3", version, workdir)
        match = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", gomod, re.MULTILINE)
        kube_minor = match.group(1) if match else "0"
        flags = [f"-X helm.sh/helm/v3/internal/version.version={version}"]
        for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
            flags += [f"-X {package}.k8sVersionMajor=1", f"-X {package}.k8sVersionMinor={kube_minor}"]
        return " ".join(flags)
    return ""


def build(name: str) -> Path:
    """Return the binary for `name`, building it first if no cached copy exists."""
    target = binary_path(name)
    if target.is_file():
        return target
    version = pinned_version(name)
    CACHE.mkdir(parents=True, exist_ok=True)
    # One build at a time across processes: a background build and a test run
    # that starts meanwhile must not both compile for half an hour.
    with open(CACHE / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        workdir = CACHE / "src" / target.parent.name
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.copytree(WRAPPERS / name, workdir)
        if name in KUBERNETES_COMPONENTS:
            gomod = _module_gomod("k8s.io/kubernetes", version, workdir)
            with open(workdir / "go.mod", "a") as handle:
                handle.write("\n" + "\n".join(_staging_replaces(gomod, version)) + "\n")
        _, package = COMPONENTS[name]
        started = time.monotonic()
        print(f"building {name} {version} (a cold build can take many minutes)...", file=sys.stderr, flush=True)
        partial = target.with_suffix(".partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        _go(["build", "-trimpath", "-ldflags", _ldflags(name, version, workdir), "-o", str(partial), package], workdir)
        partial.rename(target)
        print(f"built {target} in {time.monotonic() - started:.0f}s", file=sys.stderr, flush=True)
    return target


def main(argv: list[str]) -> int:
    names = argv or list(COMPONENTS)
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        print(f"unknown component(s): {', '.join(unknown)}; known: {', '.join(COMPONENTS)}", file=sys.stderr)
        return 2
    for name in names:
        print(build(name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
