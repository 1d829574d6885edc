#!/usr/bin/env bash
# scripts/test.sh [--setup] [pytest args...] - the full test suite, every tier (the README's test command).
#
# Puts the tools of scripts/install-tools.sh on PATH and points the docker tier at the dockerd
# of scripts/services.sh when it runs, then runs pytest over the whole suite
# (all tiers: unit, integration, terraform, oci, docker, kube). `CI` is passed through
# untouched: with CI=true a test whose tool is missing fails instead of skipping.
#
# pytest's exit code 5 ("no tests collected") is turned into a failure: a green run must mean
# that tests really ran.
set -euo pipefail

cd "$(dirname "$0")/.."

TOOLS_DIR=${TOOLS_DIR:-/opt/runner-test-tools}
SVC_DIR=${SVC_DIR:-/tmp/runner-test-svc}
export TOOLS_DIR
export PATH="$TOOLS_DIR/bin:$PATH"
# The hashicorp/null provider mirror for terraform tests (a terraform filesystem_mirror path).
export RUNNER_TEST_TF_MIRROR=${RUNNER_TEST_TF_MIRROR:-$TOOLS_DIR/tf-mirror}
if [ -z "${DOCKER_HOST:-}" ] && [ -S "$SVC_DIR/docker.sock" ]; then
  export DOCKER_HOST="unix://$SVC_DIR/docker.sock"
fi

PYTHON=${PYTHON:-python3}

# --setup: install what the tiers need first (Python deps, real tools, dockerd). Idempotent and
# quick when everything is there already; the apt and tool steps need root. The Python deps are
# the locked set (requirements/test.txt, every file SHA256-checked; scripts/lock.sh refreshes
# it), then the package itself without dependencies, so a fresh machine gets what CI tested.
if [ "${1:-}" = "--setup" ]; then
  shift
  "$PYTHON" -m pip install -q --require-hashes -r requirements/test.txt
  "$PYTHON" -m pip install -q --no-deps -e .
  if [ "$(id -u)" -eq 0 ]; then
    bash scripts/install-tools.sh
  elif command -v sudo >/dev/null; then
    sudo TOOLS_DIR="$TOOLS_DIR" bash scripts/install-tools.sh
  else
    echo "scripts/test.sh --setup: not root and no sudo: skipping scripts/install-tools.sh" >&2
  fi
  bash scripts/services.sh start
  eval "$(bash scripts/services.sh env)"
fi

rc=0
# Every test, marked or not: a tier selection here could silently drop a test that lacks a marker.
"$PYTHON" -m pytest -q "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
  echo "scripts/test.sh: pytest collected no tests - treating that as a failure" >&2
  exit 1
fi
exit "$rc"
