# byoc-runner container image.
#
#   docker build -t byoc-runner:0.1.0 .
#   docker run --rm -e RUNNER_ID=... -e RUNNER_API_URL=... -e RUNNER_API_TOKEN \
#     -v byoc-runner-state:/var/lib/byoc-runner byoc-runner:0.1.0
#
# Three stages: `tools` fetches terraform and helm and checks them against pinned SHA256 sums,
# `build` installs the locked runtime dependencies (requirements/runtime.txt) and the runner into
# a virtualenv, and the final stage holds only the venv, the two
# tools, git and CA certificates, running as uid 10001. No secret is ever an ARG or ENV here: the
# runner token comes at run time (env from a Secret, ECS secrets, or `-e RUNNER_API_TOKEN`).
#
# Build args:
#   PYTHON_IMAGE                 base image, pinned by tag (or by digest: python:3.11-slim-bookworm@sha256:...)
#   TERRAFORM_VERSION/_SHA256/_URL, HELM_VERSION/_SHA256/_URL   tool versions and their checksums;
#                                the defaults are linux/amd64. For arm64 pass the arm64 URLs and sums.
#   GIT_PACKAGE                  apt package spec for git, e.g. git=1:2.39.5-0+deb12u2 to pin it
#   PIP_ARGS                     extra pip arguments, e.g. --index-url of a mirror (never credentials:
#                                use a BuildKit secret for an authenticated index)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- tools: terraform and helm, checksum-verified ------------------------------------------------
FROM ${PYTHON_IMAGE} AS tools
ARG TERRAFORM_VERSION=1.11.4
ARG TERRAFORM_SHA256=1ce994251c00281d6845f0f268637ba50c0005657eb3cf096b92f753b42ef4dc
ARG TERRAFORM_URL=https://releases.hashicorp.com/terraform/${TERRAFORM_VERSION}/terraform_${TERRAFORM_VERSION}_linux_amd64.zip
ARG HELM_VERSION=v3.17.2
ARG HELM_SHA256=90c28792a1eb5fb0b50028e39ebf826531ebfcf73f599050dbd79bab2f277241
ARG HELM_URL=https://get.helm.sh/helm-${HELM_VERSION}-linux-amd64.tar.gz
COPY scripts/fetch-verified.py /usr/local/bin/fetch-verified
RUN python3 /usr/local/bin/fetch-verified --url "${TERRAFORM_URL}" --sha256 "${TERRAFORM_SHA256}" \
        --member terraform --out /tools/terraform \
 && python3 /usr/local/bin/fetch-verified --url "${HELM_URL}" --sha256 "${HELM_SHA256}" \
        --member linux-amd64/helm --out /tools/helm

# --- build: the runner and its dependencies in a virtualenv ----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ARG PIP_ARGS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/byoc-runner
WORKDIR /src
# The locked runtime set first (every file SHA256-checked; scripts/lock.sh refreshes it), in its
# own layer so that a source change does not reinstall the dependencies; then the runner itself
# without dependencies, so the image holds exactly the versions the tests ran against.
COPY requirements/runtime.txt ./requirements/runtime.txt
# PIP_ARGS is word-split on purpose (several flags).
RUN /opt/byoc-runner/bin/pip install ${PIP_ARGS} --require-hashes -r requirements/runtime.txt
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY handlers ./handlers
COPY controlplane ./controlplane
RUN /opt/byoc-runner/bin/pip install ${PIP_ARGS} --no-deps . \
 && /opt/byoc-runner/bin/runner version

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG GIT_PACKAGE=git
LABEL org.opencontainers.image.title="byoc-runner" \
      org.opencontainers.image.description="BYOC runner agent for a Nuon-compatible runner API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# git for module and chart sources; openssh-client for git over ssh.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates "${GIT_PACKAGE}" openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 runner \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/byoc-runner --no-create-home \
        --shell /usr/sbin/nologin runner \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/byoc-runner

COPY --from=tools /tools/terraform /tools/helm /usr/local/bin/
COPY --from=build /opt/byoc-runner /opt/byoc-runner

ENV PATH=/opt/byoc-runner/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RUNNER_IN_CONTAINER=1 \
    RUNNER_STATE_DIR=/var/lib/byoc-runner \
    RUNNER_HEALTH_ADDR=0.0.0.0:9090

# Journal of claimed executions, log spool, workspaces and tools cache: keep it on a volume so a
# restarted container reports its orphaned executions.
VOLUME ["/var/lib/byoc-runner"]
WORKDIR /var/lib/byoc-runner
USER 10001:10001
EXPOSE 9090

# /healthz on the port of RUNNER_HEALTH_ADDR (python: the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, sys, urllib.request; port = os.environ.get('RUNNER_HEALTH_ADDR', '0.0.0.0:9090').rpartition(':')[2]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]

# SIGTERM drains: stop claiming, finish running jobs within RUNNER_DRAIN_GRACE, exit 0. Give the
# container at least that long (`docker stop -t`, Kubernetes terminationGracePeriodSeconds,
# ECS stopTimeout).
STOPSIGNAL SIGTERM
ENTRYPOINT ["runner"]
CMD ["run"]
