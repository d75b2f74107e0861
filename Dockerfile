# syntax=docker/dockerfile:1
# One image, two processes: `ecr-pullthrough webhook` (HTTPS on 8443) and
# `ecr-pullthrough controller` (health and metrics on 8080). Build it with `make image`.
#
# Both bases are build arguments and come from registries without Docker Hub's rate limit:
# - the builder is Debian 12 through ECR Public (Docker's official images are mirrored there);
# - the final stage is distroless Python (Debian 12's python3.11, no shell, no package manager),
#   with the nonroot user 65532.
# The venv is built by the builder's /usr/bin/python3.11 and runs on the final stage's
# /usr/bin/python3.11: the same Debian interpreter at the same path. Change both bases together.
# The defaults are tags: the release workflow resolves each to its digest and builds with
# `base@sha256:...`, and `make image` takes BUILDER_IMAGE / RUNTIME_IMAGE to pin or replace them
# (README, "The container image"). The image test builds this file on local Debian bases.
ARG BUILDER_IMAGE=public.ecr.aws/docker/library/debian:bookworm-slim
ARG RUNTIME_IMAGE=gcr.io/distroless/python3-debian12:nonroot

FROM ${BUILDER_IMAGE} AS builder

# Build time only, never in the image: a CA bundle mounted into the build for pip, where PyPI is reached
# through a TLS-inspecting proxy (the image test passes this machine's bundle with `-v`).
ARG PIP_CERT

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHON=/usr/bin/python3.11

WORKDIR /src

COPY docker/install.sh docker/
RUN sh docker/install.sh system

# The locked dependencies first, so that this layer is rebuilt only when a lock changes.
COPY requirements.lock requirements-build.lock ./
RUN sh docker/install.sh dependencies /opt/venv

COPY pyproject.toml README.md ./
COPY webhook webhook/
RUN sh docker/install.sh project /opt/venv


# No RUN below: the final base has no shell to run one.
FROM ${RUNTIME_IMAGE}

# Kept equal to pyproject.toml's version by tests/integration/test_image.py; a release build passes its own.
ARG VERSION=0.1.0
# The chart's default image is ghcr.io/ecr-pullthrough/ecr-pullthrough; this label links it to its repository.
ARG SOURCE=https://github.com/ecr-pullthrough/ecr-pullthrough

LABEL org.opencontainers.image.title="ecr-pullthrough" \
      org.opencontainers.image.description="Rewrites Docker Hub images to an AWS ECR pull-through cache on every pod admission, and keeps the ECR pull secret fresh." \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY --from=builder /opt/venv /opt/venv

# Nothing writes to / at run time, so the chart runs with readOnlyRootFilesystem: true.
# No bytecode caches (the venv's .pyc files were compiled at install); nothing of ours
# writes temporary files, and the chart still mounts an emptyDir at /tmp for libraries.
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# The uid and gid of the chart's securityContext: distroless's "nonroot" (65532), numeric so that
# runAsNonRoot can verify it without reading /etc/passwd.
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["ecr-pullthrough"]
