#!/usr/bin/env bash
# scripts/lock.sh - refresh the locked dependency set (requirements/*.txt) from pyproject.toml.
#
#   scripts/lock.sh                          keep every pin that still fits pyproject.toml, resolve
#                                            only what changed (after adding or editing a dependency)
#   scripts/lock.sh --upgrade                the newest versions pyproject.toml's ranges allow
#   scripts/lock.sh --upgrade-package pytest one package (any extra argument goes to `uv pip compile`)
#
# Two files, both for CPython 3.11 on linux x86_64, every distribution pinned with its SHA256 hashes:
#   requirements/test.txt     runtime + the `test` extra: what scripts/test.sh --setup and .ci/run install
#   requirements/runtime.txt  runtime only, for the Dockerfile; resolved with test.txt as its
#                             constraints, so the image holds the very versions the tests ran against
# Install either with `pip install --require-hashes -r FILE` and then `pip install --no-deps -e .`.
#
# The resolver is uv's `pip compile` (uv is a PyPI package; this script installs the pinned version
# into a private virtualenv when `uv` of that version is not on PATH). uv resolves for a target
# Python and platform other than the one it runs on, so the lock does not depend on the machine
# that refreshed it.
set -euo pipefail

cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
TARGET=(--python-version 3.11 --python-platform x86_64-unknown-linux-gnu)
COMMON=(--generate-hashes --no-build --index-url https://pypi.org/simple --quiet
  --custom-compile-command "scripts/lock.sh")

uv_bin() {
  if command -v uv >/dev/null && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    command -v uv
    return
  fi
  local venv=${UV_TOOL_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/byoc-runner/uv-$UV_VERSION}
  if [ ! -x "$venv/bin/uv" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/python" -m pip install -q "uv==$UV_VERSION" >&2
  fi
  echo "$venv/bin/uv"
}

UV=$(uv_bin)
"$UV" pip compile pyproject.toml --extra test "${TARGET[@]}" "${COMMON[@]}" "$@" -o requirements/test.txt
"$UV" pip compile pyproject.toml "${TARGET[@]}" "${COMMON[@]}" --constraint requirements/test.txt \
  -o requirements/runtime.txt
echo "scripts/lock.sh: wrote requirements/test.txt ($(grep -c '==' requirements/test.txt) pins)" \
  "and requirements/runtime.txt ($(grep -c '==' requirements/runtime.txt) pins)"
