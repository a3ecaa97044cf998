#!/usr/bin/env bash
# ClamAV's daemon for local runs and tests: engine 1 of the scan step (shared/pec-scan).
# It runs with a project-owned configuration, on a unix socket (no TCP), with the project's own
# signature databases (infra/antivirus/clamav/: official definitions cannot be downloaded here,
# and freshclam is never run). The system clamd configuration and service are never touched.
#
#   infra/local/clamd.sh start     start clamd (or reuse this clone's if it answers PING)
#   infra/local/clamd.sh stop      stop the clamd this script started, and wait until it is gone
#   infra/local/clamd.sh status    print state; exit 0 only if clamd answers PING with PONG
#   infra/local/clamd.sh env       print `export PEC_CLAMD_SOCKET=...` (eval "$(... env)")
#
# State (config, socket, pid, log): $PEC_CLAMD_DIR, default $PEC_STATE_DIR/clamd
# ($PEC_STATE_DIR defaults to .local/stack in this clone). Install: infra/local/install.sh clamav.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLAMD_DIR="${PEC_CLAMD_DIR:-$PEC_STATE_DIR/clamd}"
CONF="$CLAMD_DIR/clamd.conf"
SOCKET="$CLAMD_DIR/clamd.sock"
PID_FILE="$CLAMD_DIR/clamd.pid"
LOG="$CLAMD_DIR/clamd.log"
LOCK="$CLAMD_DIR/clamd.lock"
DB_DIR="$PEC_REPO/infra/antivirus/clamav"
START_TIMEOUT="${PEC_CLAMD_START_TIMEOUT:-60}"

alive() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

# PING over the unix socket; succeeds only on a PONG answer.
pong() {
  python3 - "$SOCKET" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(2)
try:
    s.connect(sys.argv[1])
    s.sendall(b"zPING\0")
    answer = b""
    while True:
        chunk = s.recv(64)
        if not chunk:
            break
        answer += chunk
except OSError:
    sys.exit(1)
finally:
    s.close()
sys.exit(0 if answer.rstrip(b"\0\n") == b"PONG" else 1)
PY
}

clamd_bin() {
  local bin
  bin="$(command -v clamd || true)"
  [ -n "$bin" ] || bin=/usr/sbin/clamd
  [ -x "$bin" ] || pec_die "clamd is not installed: run infra/local/install.sh clamav (Debian package clamav-daemon)"
  echo "$bin"
}

write_config() {
  mkdir -p "$CLAMD_DIR/tmp"
  # Limits are above the scanner's own (shared/pec-scan Limits: 256 MiB expanded per message),
  # so clamd never silently skips a part the walker hands it.
  cat >"$CONF" <<CONF
# Written by infra/local/clamd.sh; regenerated at every start. Not the system configuration.
Foreground yes
LocalSocket $SOCKET
LocalSocketMode 600
FixStaleSocket yes
DatabaseDirectory $DB_DIR
TemporaryDirectory $CLAMD_DIR/tmp
LogTime yes
LogVerbose no
ExtendedDetectionInfo yes
Bytecode no
SelfCheck 3600
MaxThreads 4
MaxConnectionQueueLength 30
ReadTimeout 120
CommandReadTimeout 30
StreamMaxLength 300M
MaxScanSize 400M
MaxFileSize 300M
MaxRecursion 32
MaxFiles 10000
CONF
}

fail_start() {
  pec_log "error: clamd did not answer PING on $SOCKET within ${START_TIMEOUT}s. Log: $LOG"
  pec_log "---- last 40 lines of $LOG ----"
  tail -n 40 "$LOG" >&2 || true
  pec_log "----"
  stop_clamd
  exit 1
}

stop_clamd() {
  local pid
  [ -f "$PID_FILE" ] || return 0
  pid="$(cat "$PID_FILE")"
  if kill -0 "$pid" 2>/dev/null; then
    # setsid made clamd the leader of its own process group: signal exactly that group.
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    pec_log "clamd stopped (pid $pid)"
  fi
  rm -f "$PID_FILE" "$SOCKET"
}

cmd_start() {
  local bin deadline
  if alive && pong; then
    pec_log "reusing running clamd (pid $(cat "$PID_FILE"), socket $SOCKET)"
    return 0
  fi
  stop_clamd
  bin="$(clamd_bin)"
  [ -d "$DB_DIR" ] || pec_die "signature directory $DB_DIR is missing"
  write_config
  : >"$LOG"
  (cd "$CLAMD_DIR" && exec setsid "$bin" --config-file="$CONF" --foreground >>"$LOG" 2>&1 </dev/null 9>&-) &
  echo $! >"$PID_FILE"
  deadline=$((SECONDS + START_TIMEOUT))
  while ! pong; do
    alive || { pec_log "clamd exited during start-up"; fail_start; }
    [ "$SECONDS" -lt "$deadline" ] || fail_start
    sleep 0.2
  done
  pec_log "clamd $("$bin" --version | sed 's/^ClamAV //') on $SOCKET (pid $(cat "$PID_FILE"), signatures $DB_DIR, log $LOG)"
}

cmd_status() {
  if alive && pong; then
    echo "clamd: running (pid $(cat "$PID_FILE")), socket $SOCKET answers PONG"
    return 0
  fi
  if alive; then
    echo "clamd: process $(cat "$PID_FILE") alive but $SOCKET does not answer PING"
  else
    echo "clamd: not running"
  fi
  return 1
}

mkdir -p "$CLAMD_DIR"
# One start/stop at a time per state directory (parallel test runs share it).
exec 9>"$LOCK"
flock 9
case "${1:-}" in
  start) cmd_start ;;
  stop) stop_clamd ;;
  status) cmd_status ;;
  env) echo "export PEC_CLAMD_SOCKET=$SOCKET" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
