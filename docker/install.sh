#!/bin/sh
# Installs ecr-pullthrough into a new virtualenv exactly as the image does, in steps so that the
# image's dependency layer is rebuilt only when requirements.lock changes:
#
#   sh docker/install.sh system                apt-get the interpreter's venv module when it is missing
#   sh docker/install.sh dependencies VENV     create VENV and install requirements.lock into it
#   sh docker/install.sh project VENV          build the project's wheel, install it without dependencies
#
# Run it from the source folder. The Dockerfile's builder stage runs every step, and
# tests/integration/test_image.py runs the last two, so that test proves what the image runs.
# PYTHON (default python3) is the interpreter the venv is made for: in the image, Debian's
# /usr/bin/python3.11, the same file at the same path as in the distroless final stage.
set -eu

step=${1:-}
venv=${2:-}
python=${PYTHON:-python3}
# Build tools (pip, and setuptools from requirements-build.lock) live apart from the venv,
# in the builder only: the image's venv gets no pip or setuptools.
tools=.build-tools
# Never used at run time and large: the kubernetes client's asyncio half (about 68 MB; we use its
# synchronous client only). Removed after install; `pip check` still holds (the metadata is intact).
unused="kubernetes/aio"

tool_pip() {
    "$tools/bin/python" -m pip --disable-pip-version-check "$@"
}

case $step in
system)
    # debian:bookworm-slim has no Python; a base that already has its venv module installs nothing.
    if ! "$python" -c 'import ensurepip, venv' 2>/dev/null; then
        apt-get update
        apt-get install -y --no-install-recommends python3-venv
        rm -rf /var/lib/apt/lists/*
    fi
    exit 0
    ;;
dependencies | project)
    if [ -z "$venv" ]; then step=usage; fi
    ;;
esac

case $step in
dependencies)
    "$python" -m venv "$tools"
    # The build backend, pinned with hashes like the runtime dependencies (`make lock`).
    tool_pip install --require-hashes --only-binary=:all: --requirement requirements-build.lock
    "$python" -m venv --without-pip "$venv"
    # Every file is checked against the lock's hashes. Wheels only: the image has no
    # compiler, and a package that stops shipping a wheel must fail here, not build.
    tool_pip --python "$venv/bin/python" install --require-hashes --only-binary=:all: --requirement requirements.lock
    for path in $unused; do
        rm -rf "$venv"/lib/python3*/site-packages/"$path"
    done
    ;;
project)
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    # No build isolation: the wheel is built with the locked setuptools, not whatever is newest.
    tool_pip wheel --no-deps --no-build-isolation --wheel-dir "$wheels" .
    # --no-deps: every dependency comes from the lock; `pip check` fails if the lock lacks one.
    tool_pip --python "$venv/bin/python" install --no-deps "$wheels"/*.whl
    tool_pip --python "$venv/bin/python" check
    ;;
*)
    echo "usage: sh docker/install.sh system | dependencies VENV | project VENV" >&2
    exit 2
    ;;
esac
