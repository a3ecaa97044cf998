#!/usr/bin/env bash
# The local cloud: LocalStack (S3, SQS, KMS, SES v1, EventBridge, ...) and DynamoDB Local,
# both on 127.0.0.1, without Docker. Installs come from infra/local/install.sh.
#
#   infra/local/stack.sh start      start both (or reuse them if this clone's are healthy)
#   infra/local/stack.sh stop       stop both and wait until their ports are closed
#   infra/local/stack.sh status     print state; exit 0 only if both answer
#   infra/local/stack.sh env        print `export` lines for the SDK (eval "$(... env)")
#   infra/local/stack.sh bootstrap [--stack-name NAME] [--parameter Key=Value ...]
#                                   create the resources of template.yaml in the emulators (every
#                                   argument goes to bootstrap.py; one stack per provider, e.g.
#                                   --stack-name pec-b --parameter ProviderDomain=pec.altro.test)
#
# Ports: PEC_LOCALSTACK_PORT / PEC_DYNAMODB_PORT if set (must be free), otherwise free ones are
# picked. State (pids, logs, ports): $PEC_STATE_DIR (default .local/stack in this clone).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENV_FILE="$PEC_STATE_DIR/stack.env"
LS_LOG="$PEC_STATE_DIR/localstack.log"
DDB_LOG="$PEC_STATE_DIR/dynamodb.log"
LS_PID="$PEC_STATE_DIR/localstack.pid"
DDB_PID="$PEC_STATE_DIR/dynamodb.pid"
START_TIMEOUT="${PEC_STACK_START_TIMEOUT:-90}"

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

localstack_healthy() {
  curl -sf --max-time 2 "http://127.0.0.1:$1/_localstack/health" >/dev/null
}

dynamodb_healthy() {
  curl -sf --max-time 2 -X POST "http://127.0.0.1:$1/" \
    -H 'X-Amz-Target: DynamoDB_20120810.ListTables' \
    -H 'Content-Type: application/x-amz-json-1.0' \
    -H 'Authorization: AWS4-HMAC-SHA256 Credential=test/20000101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0' \
    -d '{}' | grep -q TableNames
}

read_port() { sed -n "s/^export $1=http:\/\/127.0.0.1:\([0-9]*\)$/\1/p" "$ENV_FILE" 2>/dev/null || true; }

fail_start() { # name, log
  pec_log "error: $1 did not become healthy within ${START_TIMEOUT}s. Log: $2"
  pec_log "---- last 40 lines of $2 ----"
  tail -n 40 "$2" >&2 || true
  pec_log "----"
  # Leave nothing half-started behind: stop both emulators.
  stop_one "$LS_PID" LocalStack
  stop_one "$DDB_PID" "DynamoDB Local"
  exit 1
}

wait_healthy() { # name, check-fn, port, pidfile, log
  local deadline=$((SECONDS + START_TIMEOUT))
  while ! "$2" "$3"; do
    alive "$4" || { pec_log "$1 exited during start-up"; fail_start "$1" "$5" "$4"; }
    [ "$SECONDS" -lt "$deadline" ] || fail_start "$1" "$5" "$4"
    sleep 0.3
  done
}

choose_port() { # preferred (may be empty), name
  if [ -n "$1" ]; then
    pec_port_is_free "$1" || pec_die "port 127.0.0.1:$1 requested for $2 is in use"
    echo "$1"
  else
    pec_free_port
  fi
}

start_localstack() { # port
  local venv
  venv="$(pec_venv_dir)"
  [ -x "$venv/bin/python" ] || pec_die "LocalStack is not installed: run infra/local/install.sh"
  rm -rf "$PEC_STATE_DIR/localstack-fs"
  # Init hooks LocalStack runs in its own process (infra/local/localstack-init/: what each does
  # and why is written in the file). In host mode they are read from $FILESYSTEM_ROOT/etc/...
  mkdir -p "$PEC_STATE_DIR/localstack-fs/etc/localstack"
  cp -R "$PEC_REPO/infra/local/localstack-init" "$PEC_STATE_DIR/localstack-fs/etc/localstack/init"
  # hypercorn honours the host of GATEWAY_LISTEN (the default twisted server binds 0.0.0.0).
  # OVERRIDE_IN_DOCKER=0: host mode. SKIP_SSL_CERT_DOWNLOAD/DISABLE_EVENTS: no calls outside.
  # SQS_ENDPOINT_STRATEGY=path + LOCALSTACK_HOST: queue URLs point at 127.0.0.1, no DNS needed.
  (cd "$PEC_STATE_DIR" && exec env \
      GATEWAY_SERVER=hypercorn GATEWAY_LISTEN="127.0.0.1:$1" LOCALSTACK_HOST="127.0.0.1:$1" \
      OVERRIDE_IN_DOCKER=0 DNS_ADDRESS=0 SKIP_SSL_CERT_DOWNLOAD=1 DISABLE_EVENTS=1 \
      SQS_ENDPOINT_STRATEGY=path SERVICES="$LOCALSTACK_SERVICES" \
      FILESYSTEM_ROOT="$PEC_STATE_DIR/localstack-fs" \
      setsid "$venv/bin/python" -m localstack.runtime.main >"$LS_LOG" 2>&1 </dev/null) &
  echo $! >"$LS_PID"
}

start_dynamodb() { # port
  local dir launcher
  dir="$(pec_dynamodb_dir)"
  launcher="$(pec_dynamodb_launcher_dir)"
  [ -f "$launcher/LoopbackDynamoDBLocal.class" ] || pec_die "DynamoDB Local is not installed: run infra/local/install.sh"
  (cd "$PEC_STATE_DIR" && exec setsid java -Xmx512m -Djava.library.path="$dir/DynamoDBLocal_lib" \
      -cp "$launcher:$dir/DynamoDBLocal.jar:$dir/DynamoDBLocal_lib/*" \
      LoopbackDynamoDBLocal 127.0.0.1 -inMemory -port "$1" -disableTelemetry \
      >"$DDB_LOG" 2>&1 </dev/null) &
  echo $! >"$DDB_PID"
}

stop_one() { # pidfile, name
  local pid
  [ -f "$1" ] || return 0
  pid="$(cat "$1")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    pec_log "$2 stopped (pid $pid)"
  fi
  rm -f "$1"
}

cmd_start() {
  mkdir -p "$PEC_STATE_DIR"
  local lp dp
  lp="$(read_port AWS_ENDPOINT_URL)"
  dp="$(read_port AWS_ENDPOINT_URL_DYNAMODB)"
  if [ -n "$lp" ] && [ -n "$dp" ] && alive "$LS_PID" && alive "$DDB_PID" \
      && localstack_healthy "$lp" && dynamodb_healthy "$dp"; then
    pec_log "reusing running emulators: LocalStack 127.0.0.1:$lp, DynamoDB Local 127.0.0.1:$dp"
    return 0
  fi
  stop_one "$LS_PID" LocalStack
  stop_one "$DDB_PID" "DynamoDB Local"
  lp="$(choose_port "${PEC_LOCALSTACK_PORT:-}" LocalStack)"
  dp="$(choose_port "${PEC_DYNAMODB_PORT:-}" "DynamoDB Local")"
  [ "$lp" != "$dp" ] || pec_die "LocalStack and DynamoDB Local cannot share port $lp"
  start_localstack "$lp"
  start_dynamodb "$dp"
  wait_healthy LocalStack localstack_healthy "$lp" "$LS_PID" "$LS_LOG"
  wait_healthy "DynamoDB Local" dynamodb_healthy "$dp" "$DDB_PID" "$DDB_LOG"
  cat >"$ENV_FILE" <<ENV
# Written by infra/local/stack.sh start. Source it (or eval "\$(infra/local/stack.sh env)").
export AWS_ENDPOINT_URL=http://127.0.0.1:$lp
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$dp
export AWS_REGION=$PEC_LOCAL_REGION
export AWS_DEFAULT_REGION=$PEC_LOCAL_REGION
export AWS_ACCESS_KEY_ID=test
export AWS_SECRET_ACCESS_KEY=test
export PEC_S3_FORCE_PATH_STYLE=1
export PEC_STACK_STATE_DIR=$PEC_STATE_DIR
export PEC_LOCALSTACK_LOG=$LS_LOG
export PEC_DYNAMODB_LOG=$DDB_LOG
export PEC_LOCALSTACK_PID=$(cat "$LS_PID")
export PEC_DYNAMODB_PID=$(cat "$DDB_PID")
ENV
  pec_log "LocalStack $LOCALSTACK_VERSION on 127.0.0.1:$lp (log $LS_LOG)"
  pec_log "DynamoDB Local on 127.0.0.1:$dp (log $DDB_LOG)"
}

cmd_stop() {
  stop_one "$LS_PID" LocalStack
  stop_one "$DDB_PID" "DynamoDB Local"
  rm -f "$ENV_FILE"
}

cmd_status() {
  local lp dp ok=0
  lp="$(read_port AWS_ENDPOINT_URL)"
  dp="$(read_port AWS_ENDPOINT_URL_DYNAMODB)"
  if [ -n "$lp" ] && alive "$LS_PID" && localstack_healthy "$lp"; then
    echo "LocalStack:     healthy on 127.0.0.1:$lp (pid $(cat "$LS_PID"), log $LS_LOG)"
  else
    echo "LocalStack:     not running (log $LS_LOG)"; ok=3
  fi
  if [ -n "$dp" ] && alive "$DDB_PID" && dynamodb_healthy "$dp"; then
    echo "DynamoDB Local: healthy on 127.0.0.1:$dp (pid $(cat "$DDB_PID"), log $DDB_LOG)"
  else
    echo "DynamoDB Local: not running (log $DDB_LOG)"; ok=3
  fi
  return "$ok"
}

cmd_env() {
  [ -f "$ENV_FILE" ] || pec_die "the local stack is not started (no $ENV_FILE): run infra/local/stack.sh start"
  grep '^export ' "$ENV_FILE"
  # The resources of the bootstrapped stack (PEC_STATE_TABLE, PEC_RAW_BUCKET, ...), for `pec`.
  local stack="${PEC_STACK_NAME:-pec-local}"
  [ ! -f "$PEC_STATE_DIR/$stack.env" ] || grep '^export ' "$PEC_STATE_DIR/$stack.env"
}

cmd_bootstrap() {
  [ -f "$ENV_FILE" ] || pec_die "start the stack first: infra/local/stack.sh start"
  # shellcheck disable=SC1090
  source "$ENV_FILE"
  "$(pec_venv_dir)/bin/python" "$PEC_REPO/infra/local/bootstrap.py" \
    --template "$PEC_REPO/template.yaml" --state-dir "$PEC_STATE_DIR" "$@"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  bootstrap) shift; cmd_bootstrap "$@" ;;
  *) echo "usage: $0 start|stop|status|env|bootstrap [--stack-name NAME] [--parameter Key=Value ...]" >&2; exit 2 ;;
esac
