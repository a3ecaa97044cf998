#!/usr/bin/env bash
# The integration API benchmark (issue #14), on the local emulators (LocalStack S3 + SQS and
# DynamoDB Local stand in for the AWS services: every store call is a local HTTP request to a
# Python or Java emulator, far slower than S3 and DynamoDB; the figures are a lower bound of the
# API's own speed, and the ratio to GET /v1/openapi.json, which touches no store, says how much
# of a request the stores cost here):
#
#  1. requests/s and latency percentiles (wrk, Debian's package: 16 connections over 2 threads,
#     a bounded run on loopback) against a release-built pec-runner hosting the api function's
#     router (`--api-port`, the same router as in Lambda), for
#       GET  /v1/openapi.json        no authentication, no store: the HTTP and router floor
#       GET  /v1/messages/{id}       a delivered message's status (key check, rate-limit count,
#                                    message record, evidence listing)
#       POST /v1/messages            a JSON submission (key check, rate-limit count, mailbox, two
#                                    S3 writes into the raw bucket)
#     The runner runs only the API and the timers sweep while measured, so the pipeline does not
#     compete for the CPUs; the submissions it leaves on the ingress queue are purged afterwards.
#     The per-credential rate limit is lifted for the run (--api-requests-per-minute).
#  2. the api Lambda binary (release, stripped, as infra/package.sh ships it): its size, zipped
#     size, and its cold start under a stand-in for the Lambda Runtime API
#     (benches/lambda_runtime_stub.py): time to its first `invocation/next` (init) and to its
#     first answer, RUNS times, medians.
#
#   benches/api.sh                 10 s per route, 5 cold starts
#   benches/api.sh --quick         3 s per route, 3 cold starts
#   benches/api.sh --seconds S     S seconds per route
#   benches/api.sh --connections C concurrent connections (default 16)
#
# Uses the emulators of $PEC_STATE_DIR (default .local/stack of this clone) and clamd if they
# run, else starts them, and stops only what it started. Each run makes its own tenant and mailboxes
# (bench-api-<time>). Working files: $PEC_STATE_DIR/bench-api/. Figures depend on whatever else
# runs on the machine. Not part of infra/test.sh: run it on demand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh

seconds=10
connections=16
starts=5
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) seconds=3; starts=3 ;;
    --seconds) seconds="${2:?--seconds S}"; shift ;;
    --connections) connections="${2:?--connections C}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
for v in seconds connections; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || pec_die "--$v needs a positive number"
done

work="$PEC_STATE_DIR/bench-api"
target="${CARGO_TARGET_DIR:-target}"
runner="$target/release/pec-runner"
pec="$target/release/pec"
lambda="$target/release/pec-api-lambda"
started_stack=0
started_clamd=0
runner_pid=
stop_runner() {
  if [ -n "$runner_pid" ] && kill -0 "$runner_pid" 2>/dev/null; then
    kill -TERM "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  runner_pid=
}
cleanup() {
  stop_runner
  [ "$started_clamd" = 1 ] && infra/local/clamd.sh stop || true
  [ "$started_stack" = 1 ] && infra/local/stack.sh stop || true
}
trap cleanup EXIT

echo "== Setting up (release build, emulators, clamd, wrk)"
infra/local/install.sh system python dynamodb clamav loadgen
cargo build --release -q -p pec-runner -p pec-cli -p pec-api-lambda
PY="$(pec_venv_dir)/bin/python"
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started_stack=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local >/dev/null
eval "$(infra/local/stack.sh env)"
# The scan step (one message goes through the pipeline first) needs clamd.
if ! infra/local/clamd.sh status >/dev/null 2>&1; then
  infra/local/clamd.sh start
  started_clamd=1
fi
eval "$(infra/local/clamd.sh env)"
rm -rf "$work" && mkdir -p "$work"

echo
echo "== Machine"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "  $(nproc) CPU(s): ${cpu:-unknown model}; memory $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "  LocalStack $LOCALSTACK_VERSION and DynamoDB Local stand in for S3, SQS and DynamoDB; they, wrk and"
echo "  the pec-runner share these $(nproc) CPU(s). $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)."
echo "  load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"

run="bench-api-$(date -u +%Y%m%d%H%M%S)"
domain="${PEC_PROVIDER_DOMAIN:-pec.example.test}"
sender="mittente-$run@$domain"
recipient="destinatario-$run@$domain"
echo
echo "== Tenant $run, two mailboxes, an API key (send, read)"
"$pec" tenant add "$run" --name "API benchmark $run" | sed 's/^/  /'
for m in "$sender" "$recipient"; do
  printf 'bench-%s\n' "$RANDOM$RANDOM" | "$pec" mailbox create "$m" --tenant "$run" --plan gold \
    --password-stdin --fast-hash | sed 's/^/  /'
done
key="$("$pec" apikey create --tenant "$run" --name bench --scopes send,read)"

start_runner() { # log, extra runner options...; sets runner_pid and api
  local log="$1"; shift
  "$runner" --state-dir "$PEC_STATE_DIR" --api-port 0 --api-requests-per-minute 100000000 \
    --timers-every 86400 "$@" >"$log" 2>&1 &
  runner_pid=$!
  api=
  for _ in $(seq 1 300); do
    api="$(sed -n 's/^pec-runner: api \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$log")"
    [ -n "$api" ] && break
    kill -0 "$runner_pid" 2>/dev/null || { tail -n 20 "$log" >&2; pec_die "pec-runner exited at start-up"; }
    sleep 0.2
  done
  [ -n "$api" ] || pec_die "pec-runner printed no API address within 60 s (log $log)"
}

body="$(printf '{"from":"%s","to":["%s"],"subject":"Misura","text":"Corpo del messaggio di prova."}' "$sender" "$recipient")"
echo
echo "== One message through the whole pipeline (its status is what GET reads)"
start_runner "$work/runner-pipeline.log"
sent="$(curl -sS -X POST "http://$api/v1/messages" -H "Authorization: Bearer $key" \
  -H 'Content-Type: application/json' --data-binary "$body")"
id="$("$PY" -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$sent")" \
  || pec_die "POST /v1/messages: $sent"
deadline=$((SECONDS + 120))
until curl -sS "http://$api/v1/messages/$id" -H "Authorization: Bearer $key" | grep -q '"state":"delivered"'; do
  [ "$SECONDS" -lt "$deadline" ] || pec_die "message $id not delivered within 120 s"
  sleep 0.5
done
echo "  $id delivered"
stop_runner

echo
echo "== Load: $connections connections, $seconds s per route, API only (pec-runner --only TimersFunction)"
start_runner "$work/runner-load.log" --only TimersFunction
cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
cat >"$work/report.lua" <<'LUA'
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %.3f %.3f %.3f %.3f %d\n", summary.requests,
    summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, errors))
end
LUA
load() { # name, wrk arguments...
  local name="$1"; shift
  wrk -t2 -c"$connections" -d"${seconds}s" --timeout 10s "$@" >"$work/$name.out" 2>&1 \
    || { cat "$work/$name.out" >&2; pec_die "wrk failed on $name"; }
  sed -n "s/^RESULT /$name /p" "$work/$name.out" >>"$work/results.txt"
}
: >"$work/results.txt"
load openapi -s "$work/report.lua" "http://$api/v1/openapi.json"
load status -s "$work/report.lua" -H "Authorization: Bearer $key" "http://$api/v1/messages/$id"
cat "$work/post.lua" "$work/report.lua" >"$work/post-report.lua"
load submit -s "$work/post-report.lua" "http://$api/v1/messages"
stop_runner
# The submissions stay on the ingress queue unprocessed: purge them (a later run would work through them).
"$PY" - "$PEC_OUTPUT_INGRESS_QUEUE_URL" <<'PY'
import os, sys, boto3
sqs = boto3.client("sqs", endpoint_url=os.environ.get("AWS_ENDPOINT_URL"), region_name=os.environ.get("AWS_REGION", "eu-south-1"))
sqs.purge_queue(QueueUrl=sys.argv[1])
PY
"$PY" - "$work/results.txt" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, n, dur, p50, p99, mx, errors = line.split()
    rows[name] = dict(n=int(n), rps=int(n) / float(dur), p50=float(p50), p99=float(p99),
                      max=float(mx), errors=int(errors))
labels = {"openapi": "GET  /v1/openapi.json (no store)", "status": "GET  /v1/messages/{id}",
          "submit": "POST /v1/messages"}
floor = rows["openapi"]["rps"]
print("  %-34s %9s %9s %9s %9s %7s %12s" % ("route", "requests", "req/s", "p50 ms", "p99 ms", "errors", "vs no-store"))
for k in ("openapi", "status", "submit"):
    r = rows[k]
    print("  %-34s %9d %9.0f %9.2f %9.2f %7d %11.1f%%" % (labels[k], r["n"], r["rps"], r["p50"], r["p99"], r["errors"], 100 * r["rps"] / floor))
PY

echo
echo "== The api Lambda binary (release, stripped; x86_64 here, the template's Architecture may differ)"
size="$(stat -c %s "$lambda")"
rm -f "$work/bootstrap.zip"
(cd "$(dirname "$lambda")" && cp pec-api-lambda "$work/bootstrap" && cd "$work" && zip -q -9 bootstrap.zip bootstrap)
echo "  binary $((size / 1024)) KiB, zipped $(( $(stat -c %s "$work/bootstrap.zip") / 1024 )) KiB"
echo "  cold start under a Runtime API stand-in ($starts runs; config, SDK clients, router; then GET /v1/openapi.json):"
PEC_WEBHOOK_QUEUE_URL="$PEC_OUTPUT_WEBHOOK_QUEUE_URL" PEC_WEBHOOK_PRIVATE_TARGETS=allow RUST_LOG=warn \
  "$PY" benches/lambda_runtime_stub.py "$lambda" "$starts" | "$PY" -c '
import json, sys
for line in sys.stdin:
    d = json.loads(line)
    if "run" in d:
        print("    run %d: init %.1f ms, first answer %.1f ms" % (d["run"], d["init_ms"], d["first_response_ms"]))
    else:
        print("  median: init %.1f ms, first answer %.1f ms" % (d["init_ms_median"], d["first_response_ms_median"]))
'
