# syntax=docker/dockerfile:1
# One image, two processes: `ecr-pullthrough webhook` (HTTPS on 8443) and
# `ecr-pullthrough controller` (health and metrics on 8080). Build it with `make image`.
#
# Both stages use the same base, pinned by the digest of its multi-architecture index
# (linux/amd64 and linux/arm64): the venv copied from the builder runs on the final
# stage's /usr/local/bin/python3.11. Change the tag and the digest together, in both stages.

FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3 AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src

# The locked dependencies first, so that this layer is rebuilt only when the lock changes.
COPY docker/install.sh docker/
COPY requirements.lock ./
RUN sh docker/install.sh dependencies /opt/venv

COPY pyproject.toml README.md ./
COPY webhook webhook/
RUN sh docker/install.sh project /opt/venv


FROM python:3.11.15-slim-bookworm@sha256:d29f48a31a8b408ed19272ca1e7b10ebae13b240a27e862d3d4217c528e2e0c3

# Kept equal to pyproject.toml's version by tests/integration/test_image.py; a release build passes its own.
ARG VERSION=0.1.0
# The chart's default image is ghcr.io/ecr-pullthrough/ecr-pullthrough; this label links it to its repository.
ARG SOURCE=https://github.com/ecr-pullthrough/ecr-pullthrough

LABEL org.opencontainers.image.title="ecr-pullthrough" \
      org.opencontainers.image.description="Rewrites Docker Hub images to an AWS ECR pull-through cache on every pod admission, and keeps the ECR pull secret fresh." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

# The uid and gid of the chart's securityContext (65532, "nonroot" as in distroless images),
# named so that tools looking the user up find one. No home: the root filesystem is read-only.
RUN groupadd --system --gid 65532 nonroot \
    && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin nonroot

COPY --from=builder /opt/venv /opt/venv

# Nothing writes to / at run time, so the chart runs with readOnlyRootFilesystem: true.
# No bytecode caches (the venv's .pyc files were compiled at install); nothing of ours
# writes temporary files, and the chart still mounts an emptyDir at /tmp for libraries.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["ecr-pullthrough"]
