#!/usr/bin/env bash
# rspamd, the spam engine of the scan step (issue #18), for local runs and tests: Debian's
# package with a project-owned configuration, its normal worker on 127.0.0.1 on a free port,
# offline (no Redis, no DNS lookups, no fuzzy or URL services: it must answer at once without
# a network). The system rspamd configuration and service are never touched.
#
#   infra/local/rspamd.sh start     start rspamd (or reuse this clone's if it answers /ping)
#   infra/local/rspamd.sh stop      stop the rspamd this script started, and wait until it is gone
#   infra/local/rspamd.sh status    print state; exit 0 only if /ping answers pong
#   infra/local/rspamd.sh env       print `export PEC_SPAM_URL=http://127.0.0.1:<port>`
#
# What this configuration scores: rspamd's core, which recognises the GTUBE test pattern
# (action reject) — the pattern the tests and the demo send. Production runs Debian's stock
# configuration with Redis beside the edge service (docs/antispam.md).
#
# State (config, port, pid, log): $PEC_RSPAMD_DIR, default $PEC_STATE_DIR/rspamd.
# Install: infra/local/install.sh spam.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RSPAMD_DIR="${PEC_RSPAMD_DIR:-$PEC_STATE_DIR/rspamd}"
CONF="$RSPAMD_DIR/conf/rspamd.conf"
PORT_FILE="$RSPAMD_DIR/port"
PID_FILE="$RSPAMD_DIR/rspamd.pid"
LOG="$RSPAMD_DIR/log/rspamd.log"
LOCK="$RSPAMD_DIR/rspamd.lock"
START_TIMEOUT="${PEC_RSPAMD_START_TIMEOUT:-60}"

alive() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }
url() { echo "http://127.0.0.1:$(cat "$PORT_FILE")"; }
pong() { [ -f "$PORT_FILE" ] && [ "$(curl -sf --max-time 2 "$(url)/ping" 2>/dev/null | tr -d "\r\n")" = pong ]; }

rspamd_bin() {
  local bin
  bin="$(command -v rspamd || true)"
  [ -n "$bin" ] || bin=/usr/bin/rspamd
  [ -x "$bin" ] || pec_die "rspamd is not installed: run infra/local/install.sh spam (Debian package rspamd)"
  echo "$bin"
}

write_config() {
  local port="$1" d="$RSPAMD_DIR"
  mkdir -p "$d/conf" "$d/db" "$d/log" "$d/run"
  # A short top-level domain list: the stock one costs ~12 s at every cold start.
  printf 'com\norg\nnet\nit\ntest\nexample\n' >"$d/conf/tld.dat"
  cat >"$CONF" <<CONF
# Written by infra/local/rspamd.sh; regenerated at every start. Not the system configuration.
options {
  pidfile = "$d/run/rspamd.pid";
  dynamic_conf = "$d/db/rspamd_dynamic";
  history_file = "$d/db/rspamd.history";
  cache_file = "$d/db/symbols.cache";
  hs_cache_dir = "$d/db/";
  tempdir = "$d/run";
  url_tld = "$d/conf/tld.dat";
  filters = "";
}
logging { type = "file"; filename = "$LOG"; level = "info"; }
actions { reject = 15; add_header = 6; greylist = 4; }
worker "normal" { bind_socket = "127.0.0.1:$port"; count = 1; }
CONF
  echo "$port" >"$PORT_FILE"
}

stop_rspamd() {
  local pid
  [ -f "$PID_FILE" ] || return 0
  pid="$(cat "$PID_FILE")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    pec_log "rspamd stopped (pid $pid)"
  fi
  rm -f "$PID_FILE" "$RSPAMD_DIR/run/rspamd.pid"
}

fail_start() {
  pec_log "error: rspamd did not answer /ping on $(url) within ${START_TIMEOUT}s. Log: $LOG"
  tail -n 40 "$LOG" "$RSPAMD_DIR/log/stderr" >&2 2>/dev/null || true
  stop_rspamd
  exit 1
}

cmd_start() {
  local bin deadline user_args=()
  if alive && pong; then
    pec_log "reusing running rspamd (pid $(cat "$PID_FILE"), $(url))"
    return 0
  fi
  stop_rspamd
  bin="$(rspamd_bin)"
  write_config "$(pec_free_port)"
  : >"$LOG"
  # rspamd refuses to run its workers as root: as root they run as nobody.
  if [ "$(id -u)" = 0 ]; then
    chown -R nobody:nogroup "$RSPAMD_DIR/db" "$RSPAMD_DIR/log" "$RSPAMD_DIR/run"
    user_args=(-u nobody -g nogroup)
  fi
  (exec setsid "$bin" -f "${user_args[@]}" -c "$CONF" >"$RSPAMD_DIR/log/stderr" 2>&1 </dev/null 9>&-) &
  echo $! >"$PID_FILE"
  deadline=$((SECONDS + START_TIMEOUT))
  while ! pong; do
    alive || { pec_log "rspamd exited during start-up"; fail_start; }
    [ "$SECONDS" -lt "$deadline" ] || fail_start
    sleep 0.1
  done
  pec_log "rspamd $("$bin" --version 2>/dev/null | head -1 | awk '{print $NF}') on $(url) (pid $(cat "$PID_FILE"), log $LOG)"
}

cmd_status() {
  if alive && pong; then
    echo "rspamd: running (pid $(cat "$PID_FILE")), $(url)/ping answers pong"
    return 0
  fi
  if alive; then echo "rspamd: process $(cat "$PID_FILE") alive but not answering"; else echo "rspamd: not running"; fi
  return 1
}

mkdir -p "$RSPAMD_DIR"
exec 9>"$LOCK"
flock 9
case "${1:-}" in
  start) cmd_start ;;
  stop) stop_rspamd ;;
  status) cmd_status ;;
  env) [ -f "$PORT_FILE" ] || pec_die "rspamd was never started here: infra/local/rspamd.sh start"; echo "export PEC_SPAM_URL=$(url)" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
