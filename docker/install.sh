#!/bin/sh
# Installs ecr-pullthrough into a new virtualenv exactly as the image does, in two steps so
# that the image's dependency layer is rebuilt only when requirements.lock changes:
#
#   sh docker/install.sh dependencies VENV   create VENV and install requirements.lock into it
#   sh docker/install.sh project VENV        build the project's wheel, install it without dependencies
#
# Run it from the source folder. The Dockerfile's builder stage runs both steps, and
# tests/integration/test_image.py runs them too, so that test proves what the image runs.
# PYTHON (default python3) is the interpreter whose pip does the installing.
set -eu

step=${1:-}
venv=${2:-}
python=${PYTHON:-python3}

pip_into_venv() {
    # The venv gets no pip or setuptools of its own (3.11's ensurepip would bring an old
    # setuptools into the image); the interpreter's pip installs into it with --python.
    "$python" -m pip --python "$venv/bin/python" "$@"
}

if [ -z "$venv" ]; then step=usage; fi

case $step in
dependencies)
    "$python" -m venv --without-pip "$venv"
    # Every file is checked against the lock's hashes. Wheels only: the image has no
    # compiler, and a package that stops shipping a wheel must fail here, not build.
    pip_into_venv install --require-hashes --only-binary=:all: --requirement requirements.lock
    ;;
project)
    wheels=$(mktemp -d)
    trap 'rm -rf "$wheels"' EXIT
    "$python" -m pip wheel --no-deps --wheel-dir "$wheels" .
    # --no-deps: every dependency comes from the lock; `pip check` fails if the lock lacks one.
    pip_into_venv install --no-deps "$wheels"/*.whl
    pip_into_venv check
    ;;
*)
    echo "usage: sh docker/install.sh dependencies|project VENV" >&2
    exit 2
    ;;
esac
