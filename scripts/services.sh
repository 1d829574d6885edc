#!/usr/bin/env bash
# services.sh start|stop|status|kube-status|env - the background services tests need that pytest
# fixtures do not start themselves: dockerd (tier `docker`) and a Kubernetes control plane (tier `kube`:
# etcd, kube-apiserver, kube-controller-manager); registries, the terraform HTTP backend, moto and
# the OTLP receiver are started by fixtures on free loopback ports.
#
# dockerd runs with no bridge, no iptables and no IP forwarding, so it creates no network
# interface and no firewall rule: containers get only `host` or `none` networking, and everything
# they reach is on 127.0.0.1. Its socket, data root and logs live under SVC_DIR.
#
#   eval "$(scripts/services.sh env)"   # DOCKER_HOST for the tests (nothing secret)
set -euo pipefail

RUN=${SVC_DIR:-/tmp/runner-test-svc}
SOCK="$RUN/docker.sock"
PIDFILE="$RUN/dockerd.pid"

log() { printf 'services: %s\n' "$*"; }

wait_for() {
  local tries=$1
  shift
  for _ in $(seq 1 "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

dockerd_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

docker_ready() { DOCKER_HOST="unix://$SOCK" docker info >/dev/null 2>&1; }

start_dockerd() {
  if dockerd_pid >/dev/null && docker_ready; then
    log "dockerd already running (pid $(dockerd_pid)) on unix://$SOCK"
    return 0
  fi
  if ! command -v dockerd >/dev/null; then
    log "dockerd not installed (scripts/install-tools.sh installs docker.io); docker tests will fail in CI" >&2
    return 1
  fi
  mkdir -p "$RUN"
  rm -f "$SOCK" "$PIDFILE"
  local t0=$SECONDS
  # setsid: dockerd must not get the caller's terminal signals (Ctrl-C in a test run), only ours.
  setsid dockerd \
    --data-root "$RUN/docker" --exec-root "$RUN/docker-exec" --pidfile "$PIDFILE" \
    -H "unix://$SOCK" --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    >"$RUN/dockerd.log" 2>&1 </dev/null &
  if ! wait_for 240 docker_ready; then
    log "dockerd did not become ready in 60 s; last log lines:" >&2
    tail -n 20 "$RUN/dockerd.log" >&2 || true
    return 1
  fi
  log "dockerd ready on unix://$SOCK in $((SECONDS - t0)) s (log: $RUN/dockerd.log)"
}

stop_dockerd() {
  local pid
  if ! pid=$(dockerd_pid); then
    log "dockerd not running"
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  # dockerd stops its containers and its own containerd, then unmounts; give it 20 s.
  if ! wait_for 80 sh -c "! kill -0 $pid"; then
    log "dockerd (pid $pid) ignored SIGTERM for 20 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  log "dockerd stopped"
}

# --- kube: etcd + kube-apiserver + kube-controller-manager on 127.0.0.1 ---------------------------
# The binaries come from scripts/build-kube-from-debian-src.sh (install-tools.sh builds them into
# $TOOLS_DIR/kube). No kubelet and no scheduler: pods never run, tests patch workload status
# through the status subresource where a controller would. The controller manager runs only the
# namespace and garbage-collector controllers, so that namespace deletion completes and owned
# objects go with their owner; no workload controller overwrites the status a test wrote. Ports
# are fixed (tests read the kubeconfig below): etcd 12379-12381, apiserver https://127.0.0.1:16443.
#
# TLS is real: a CA and a serving certificate for 127.0.0.1/localhost are made with openssl in
# $SVC_DIR/kube on first start (kept across restarts). The admin identity is a random bearer token
# in system:masters (tokens.csv, 0600); $SVC_DIR/kube/admin.kubeconfig (0600) carries it with the
# CA, so clients verify the server. Service-account tokens are signed with sa.key.
KUBE_BIN=${KUBE_BIN:-${TOOLS_DIR:-/opt/runner-test-tools}/kube}
KDIR="$RUN/kube"
KUBE_PORT=16443
KUBECONFIG_ADMIN="$KDIR/admin.kubeconfig"

kube_pid() {
  local f="$KDIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

kube_ready() {
  [ -f "$KDIR/admin.token" ] || return 1
  [ "$(curl -fsS --cacert "$KDIR/ca.crt" -H "Authorization: Bearer $(cat "$KDIR/admin.token")" \
    "https://127.0.0.1:$KUBE_PORT/readyz" 2>/dev/null)" = ok ]
}

kube_certs() {
  [ -s "$KDIR/serving.crt" ] && [ -s "$KDIR/sa.key" ] && return 0
  (
    cd "$KDIR"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=runner-test-kube-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" -keyout serving.key -out serving.csr 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >san.ext
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile san.ext -out serving.crt 2>/dev/null
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
    chmod 0600 ca.key serving.key sa.key
  )
}

kube_kubeconfig() {
  local ca
  ca=$(base64 -w0 <"$KDIR/ca.crt")
  (
    umask 077
    cat >"$KUBECONFIG_ADMIN" <<KC
apiVersion: v1
kind: Config
clusters: [{name: runner-test, cluster: {server: "https://127.0.0.1:$KUBE_PORT", certificate-authority-data: "$ca"}}]
users: [{name: admin, user: {token: "$(cat "$KDIR/admin.token")"}}]
contexts: [{name: runner-test, context: {cluster: runner-test, user: admin}}]
current-context: runner-test
KC
  )
}

start_kube() {
  if [ ! -x "$KUBE_BIN/kube-apiserver" ]; then
    log "kube-apiserver not built in $KUBE_BIN (scripts/install-tools.sh builds it); kube tests will fail in CI" >&2
    return 1
  fi
  if kube_pid apiserver >/dev/null && kube_ready; then
    log "kube-apiserver already running (pid $(kube_pid apiserver)) on https://127.0.0.1:$KUBE_PORT"
    return 0
  fi
  stop_kube >/dev/null
  mkdir -p "$KDIR"
  chmod 0700 "$KDIR"
  kube_certs
  if [ ! -s "$KDIR/admin.token" ]; then
    (umask 077 && openssl rand -hex 24 >"$KDIR/admin.token")
  fi
  (umask 077 && echo "$(cat "$KDIR/admin.token"),admin,admin-uid,system:masters" >"$KDIR/tokens.csv")
  kube_kubeconfig
  local t0=$SECONDS
  rm -rf "$KDIR/etcd"  # a fresh cluster per start: tests never see a previous run's objects
  setsid etcd --name runner-test --data-dir "$KDIR/etcd" \
    --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster runner-test=http://127.0.0.1:12380 --listen-metrics-urls http://127.0.0.1:12381 \
    >"$KDIR/etcd.log" 2>&1 </dev/null &
  echo $! >"$KDIR/etcd.pid"
  setsid "$KUBE_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:12379 --bind-address=127.0.0.1 \
    --advertise-address=127.0.0.1 --secure-port=$KUBE_PORT --insecure-port=0 \
    --tls-cert-file="$KDIR/serving.crt" --tls-private-key-file="$KDIR/serving.key" \
    --client-ca-file="$KDIR/ca.crt" --token-auth-file="$KDIR/tokens.csv" --authorization-mode=RBAC \
    --service-account-key-file="$KDIR/sa.pub" --service-account-signing-key-file="$KDIR/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none --enable-priority-and-fairness=false \
    --disable-admission-plugins=ServiceAccount >"$KDIR/apiserver.log" 2>&1 </dev/null &
  echo $! >"$KDIR/apiserver.pid"
  if ! wait_for 240 kube_ready; then
    log "kube-apiserver did not become ready in 60 s; last log lines:" >&2
    tail -n 20 "$KDIR/apiserver.log" >&2 || true
    return 1
  fi
  setsid "$KUBE_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_ADMIN" --bind-address=127.0.0.1 \
    --secure-port=0 --port=0 --leader-elect=false --use-service-account-credentials=false \
    --controllers=namespace,garbagecollector \
    >"$KDIR/kcm.log" 2>&1 </dev/null &
  echo $! >"$KDIR/kcm.pid"
  log "kube-apiserver ready on https://127.0.0.1:$KUBE_PORT in $((SECONDS - t0)) s (admin kubeconfig: $KUBECONFIG_ADMIN)"
}

stop_kube() {
  local s pid
  for s in kcm apiserver etcd; do
    pid=$(kube_pid "$s") || { rm -f "$KDIR/$s.pid"; continue; }
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 80 sh -c "! kill -0 $pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$KDIR/$s.pid"
  done
  log "kube stopped"
}

case "${1:-}" in
  start)
    start_dockerd
    if [ -x "$KUBE_BIN/kube-apiserver" ] || [ "${CI:-}" = true ]; then
      start_kube
    else
      log "kube-apiserver not built: skipping it (tier kube skips outside CI; scripts/install-tools.sh builds it)"
    fi
    ;;
  stop)
    stop_kube
    stop_dockerd
    ;;
  status)
    rc=0
    if dockerd_pid >/dev/null && docker_ready; then
      log "dockerd running (pid $(dockerd_pid)) on unix://$SOCK"
    else
      log "dockerd not running"
      rc=1
    fi
    # Informative only: the exit code is dockerd's (tests/deploy reads it), kube has its own.
    if kube_pid apiserver >/dev/null && kube_ready; then
      log "kube-apiserver running (pid $(kube_pid apiserver)) on https://127.0.0.1:$KUBE_PORT"
    else
      log "kube-apiserver not running"
    fi
    exit "$rc"
    ;;
  kube-status) kube_pid apiserver >/dev/null && kube_ready ;;
  # The kube tier finds its admin kubeconfig at $SVC_DIR/kube/admin.kubeconfig by itself.
  env) printf 'export DOCKER_HOST=%q\n' "unix://$SOCK" ;;
  *)
    echo "usage: $0 start|stop|status|kube-status|env" >&2
    exit 2
    ;;
esac
