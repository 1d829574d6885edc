#!/usr/bin/env bash
# build-kube-from-debian-src.sh OUTDIR - run by scripts/install-tools.sh when OUTDIR lacks the binaries.
#
# Builds a real kube-apiserver and kube-controller-manager (Kubernetes v1.20.2) from Debian's own
# `kubernetes` source package with Debian's Go, for the `kube` test tier (scripts/services.sh). No kind/k3s/envtest
# can be had offline here; this is the only real apiserver obtainable (see
# reference/test-tools.md section 4). Cold build: about 4-5 minutes and 1.6 GB of scratch space
# (WORK, deleted at the end unless WORK was given). Needs root (apt-get).
#
# Three fixes to the upstream tree, all needed:
#  1. GOPATH mode (GO111MODULE=off): module mode refuses the vendored tree.
#  2. pkg/generated/openapi/zz_generated.openapi.go is missing from the tarball: generate it
#     with openapi-gen built from vendor/.
#  3. Go >= 1.18 needs reflect2 >= 1.0.2; swap in Debian's golang-github-modern-go-reflect2-dev.
# Version ldflags must target the vendored version packages, or /version says v0.0.0-master and
# Helm's kubeVersion checks break.
#
# When no deb-src source is configured, one is added for the same archive as the machine's
# existing Debian `deb` source (override with DEBIAN_ARCHIVE_URL).
set -euo pipefail

OUT=${1:?usage: $0 OUTDIR}
own_work=0
if [ -z "${WORK:-}" ]; then
  WORK=$(mktemp -d)
  own_work=1
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
export DEBIAN_FRONTEND=noninteractive

if [ -x "$OUT/kube-apiserver" ] && [ -x "$OUT/kube-controller-manager" ]; then
  echo "build-kube: already built in $OUT: $("$OUT/kube-apiserver" --version)"
  exit 0
fi

archive_url() {
  if [ -n "${DEBIAN_ARCHIVE_URL:-}" ]; then
    echo "$DEBIAN_ARCHIVE_URL"
    return
  fi
  # The URIs of the first deb822 stanza that carries the plain `bookworm` suite.
  python3 - <<'PY'
import glob, sys

for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    for stanza in open(path).read().split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if ":" in line and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and "bookworm" in fields.get("suites", []):
            print(fields["uris"][0])
            sys.exit(0)
sys.exit("build-kube: no Debian bookworm source found; set DEBIAN_ARCHIVE_URL")
PY
}

if ! grep -rqs '^Types:.*deb-src\|^deb-src' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  url=$(archive_url)
  cat >/etc/apt/sources.list.d/debian-src.sources <<SRC
Types: deb-src
URIs: $url
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
fi
apt-get install -y -qq --no-install-recommends golang-go golang-github-modern-go-reflect2-dev etcd-server >/dev/null

cd "$WORK"
apt-get source --download-only kubernetes >/dev/null 2>&1
tar xzf kubernetes_*.orig.tar.gz
SRC=$(ls -d "$WORK"/kubernetes-1.*/)
SRC=${SRC%/}

# fix 3: reflect2 1.0.2 from Debian
rm -rf "$SRC/vendor/github.com/modern-go/reflect2"
mkdir -p "$SRC/vendor/github.com/modern-go/reflect2"
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s \
  "$SRC/vendor/github.com/modern-go/reflect2/"

# fix 1: GOPATH mode
mkdir -p "$WORK/gp/src/k8s.io"
ln -sfn "$SRC" "$WORK/gp/src/k8s.io/kubernetes"
export GO111MODULE=off GOPATH="$WORK/gp" GOCACHE="$WORK/gocache" CGO_ENABLED=0 GOFLAGS=
cd "$WORK/gp/src/k8s.io/kubernetes"

# fix 2: generate the OpenAPI definitions
go build -o "$WORK/openapi-gen" ./vendor/k8s.io/kube-openapi/cmd/openapi-gen
DIRS=$(grep -rlR --include='*.go' '^// *+k8s:' pkg cmd plugin vendor 2>/dev/null |
  grep -vE '^vendor/k8s.io/(code-generator|sample-apiserver)/' |
  xargs grep -l '+k8s:openapi-gen=' | xargs -n1 dirname | LC_ALL=C sort -u |
  sed 's#^#k8s.io/kubernetes/#' | paste -sd,)
"$WORK/openapi-gen" -i "$DIRS" -p k8s.io/kubernetes/pkg/generated/openapi -O zz_generated.openapi \
  -h vendor/k8s.io/code-generator/hack/boilerplate.go.txt -r "$WORK/violations.report"

P=k8s.io/kubernetes/vendor/k8s.io
LDF="-s -w"
for pkg in component-base/version client-go/pkg/version; do
  LDF="$LDF -X $P/$pkg.gitVersion=v1.20.2 -X $P/$pkg.gitMajor=1 -X $P/$pkg.gitMinor=20"
  LDF="$LDF -X $P/$pkg.gitTreeState=clean -X $P/$pkg.buildDate=2021-01-13T00:00:00Z"
done
for cmd in kube-apiserver kube-controller-manager; do
  go build -ldflags "$LDF" -o "$OUT/$cmd.tmp" "./cmd/$cmd"
  mv "$OUT/$cmd.tmp" "$OUT/$cmd"
done

cd /
[ "$own_work" -eq 1 ] && rm -rf "$WORK"
echo "build-kube: $("$OUT/kube-apiserver" --version) -> $OUT"
