#!/usr/bin/env bash
# services.sh start|stop|status|env - the background services tests need that pytest fixtures do
# not start themselves. Today that is only dockerd (tier `docker`); registries, the terraform
# HTTP backend, moto and the OTLP receiver are started by fixtures on free loopback ports.
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

case "${1:-}" in
  start) start_dockerd ;;
  stop) stop_dockerd ;;
  status)
    if dockerd_pid >/dev/null && docker_ready; then
      log "dockerd running (pid $(dockerd_pid)) on unix://$SOCK"
    else
      log "dockerd not running"
      exit 1
    fi
    ;;
  env) printf 'export DOCKER_HOST=%q\n' "unix://$SOCK" ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
