#!/usr/bin/env bash
# The pipeline benchmark, on the local emulators (LocalStack + DynamoDB Local, run on this
# machine's own cores beside everything else):
#
#  1. throughput and latency: N messages (default 1000) submitted over SMTP (STARTTLS + AUTH,
#     several connections in parallel, Python smtplib) to the submission gateway of a
#     release-built pec-runner that runs every function (ingress, scan, sign, deliver, receipts);
#     prints the wall time from the first submission to the last delivery receipt, the throughput,
#     and p50/p99 of the time from submission (the gateway's received_at) to the acceptance
#     receipt and to the delivery receipt being stored (the mailbox items' stored_at), read from
#     the state table;
#  2. memory: one message of about 30 MB (base64 attachments) written into the raw bucket as the
#     gateway writes a submission, then carried through the pipeline by one runner process per
#     step (`--only FUNCTION --until-idle 3`: ingress, scan, ingress, sign, deliver, receipts,
#     sign, deliver); prints each function's peak resident set (the kernel's ru_maxrss of that
#     process, from wait4) beside the same runner idle with no message, and checks that the
#     message reached the recipient and its delivery receipt the sender.
#
#   benches/pipeline.sh                  1000 messages (about 9.5 minutes on 2 cores, of which
#                                        ~8 for the pipeline at ~2 messages/s)
#   benches/pipeline.sh --quick          100 messages (smoke run)
#   benches/pipeline.sh --messages N     N messages
#   benches/pipeline.sh --concurrency C  SMTP connections in parallel (default 8; the gateway takes at most 16 from one address, pec_submit::Config::max_sessions_per_ip)
#   benches/pipeline.sh --rate R         submit at most R messages/s (default: as fast as possible;
#                                        the latencies then include the queueing of the burst)
#   benches/pipeline.sh --skip-memory    only the throughput/latency part
#
# Figures depend on whatever else runs on the machine: the emulators, clamd and the runner share
# its cores. Leave no other pec-runner polling the same stack's queues while it runs.
# Uses the emulators of $PEC_STATE_DIR (default .local/stack) if they run, else starts them, and
# the same for clamd (infra/local/clamd.sh); stops only what it started. Each run makes its own
# tenant and two gold mailboxes (bench-<time>), so runs can share a stack. Certifies the KMS key
# as infra/demo.sh does (infra/local/certify.sh). Not part of infra/test.sh: run it on demand.
# Working files and the runner logs: $PEC_STATE_DIR/bench-pipeline/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh
source infra/local/certify.sh

messages=1000
concurrency=8
rate=0
memory=1
big_bytes=30000000
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) messages=100 ;;
    --messages) messages="${2:?--messages N}"; shift ;;
    --concurrency) concurrency="${2:?--concurrency C}"; shift ;;
    --rate) rate="${2:?--rate R}"; shift ;;
    --skip-memory) memory=0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$messages" =~ ^[1-9][0-9]*$ ]] || pec_die "--messages needs a positive number"
[[ "$concurrency" =~ ^[1-9][0-9]*$ ]] || pec_die "--concurrency needs a positive number"

PY="$(pec_venv_dir)/bin/python"
bench() { "$PY" benches/pipeline.py "$@"; }
work="$PEC_STATE_DIR/bench-pipeline"
runner="${CARGO_TARGET_DIR:-target}/release/pec-runner"
pec="${CARGO_TARGET_DIR:-target}/release/pec"

started_stack=0
started_clamd=0
runner_pid=
cleanup() {
  if [ -n "$runner_pid" ] && kill -0 "$runner_pid" 2>/dev/null; then
    kill -TERM "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  [ "$started_clamd" = 1 ] && infra/local/clamd.sh stop || true
  [ "$started_stack" = 1 ] && infra/local/stack.sh stop || true
}
trap cleanup EXIT

echo "== Setting up (release build, emulators, clamd, stack resources)"
infra/local/install.sh system python dynamodb clamav
cargo build --release -q -p pec-runner -p pec-cli
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started_stack=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local >/dev/null
if ! infra/local/clamd.sh status >/dev/null 2>&1; then
  infra/local/clamd.sh start
  started_clamd=1
fi
eval "$(infra/local/stack.sh env)"
eval "$(infra/local/clamd.sh env)"
rm -rf "$work" && mkdir -p "$work"
setup_seconds=$SECONDS

echo
echo "== Machine"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "  $(nproc) CPU(s): ${cpu:-unknown model}; memory $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "  LocalStack $LOCALSTACK_VERSION and DynamoDB Local (emulators), clamd, the SMTP client and the"
echo "  pec-runner (release build: gateway + every function) all share these $(nproc) CPU(s)."
echo "  load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"

echo
echo "== Provider certificate for the KMS signing key (as infra/demo.sh)"
pec_certify_signing_key "$pec" "$work/pki"

run="bench-$(date -u +%Y%m%d%H%M%S)"
domain="${PEC_PROVIDER_DOMAIN:-pec.example.test}"
sender="mittente-$run@$domain"
recipient="destinatario-$run@$domain"
password="bench-$RANDOM$RANDOM-password"
echo
echo "== Tenant $run, two gold mailboxes"
"$pec" tenant add "$run" --name "Pipeline benchmark $run" | sed 's/^/  /'
for mbx in "$sender" "$recipient"; do
  printf '%s\n' "$password" | "$pec" mailbox create "$mbx" --tenant "$run" --plan gold \
    --password-stdin --fast-hash | sed 's/^/  /'
done
# A fresh bootstrap leaves S3's s3:TestEvent notifications in the queues: harmless (announce no
# object), but anything else would be extra work during the measurement.
dead_before="$(bench queues --state-dir "$PEC_STATE_DIR" --fail-if-busy)" \
  || pec_log "note: the function queues above are not empty (S3 test events after a fresh bootstrap are harmless)"

echo
echo "== Throughput and latency: $messages messages over SMTP, $concurrency connections$([ "$rate" = 0 ] || echo ", at most $rate/s")"
runner_log="$work/runner.log"
"$runner" --state-dir "$PEC_STATE_DIR" --smtp-port 0 --smtp-cert-out "$work/smtp.pem" >"$runner_log" 2>&1 &
runner_pid=$!
smtp=
for _ in $(seq 1 300); do
  smtp="$(sed -n 's/^pec-runner: smtp \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$runner_log")"
  [ -n "$smtp" ] && [ -s "$work/smtp.pem" ] && break
  kill -0 "$runner_pid" 2>/dev/null || { tail -n 20 "$runner_log" >&2; pec_die "pec-runner exited at start-up"; }
  sleep 0.2
done
[ -n "$smtp" ] || pec_die "pec-runner printed no SMTP address within 60 s (log $runner_log)"
echo "  gateway on $smtp; runner log $runner_log"
clamd_pid="$(cat "${PEC_CLAMD_DIR:-$PEC_STATE_DIR/clamd}/clamd.pid" 2>/dev/null || echo 0)"
processes=("LocalStack (S3, SQS, KMS, EventBridge)=@${PEC_LOCALSTACK_PID:-0}"
  "DynamoDB Local=@${PEC_DYNAMODB_PID:-0}" "clamd=$clamd_pid" "pec-runner (gateway + functions)=$runner_pid")
bench cpu "${processes[@]}" >"$work/cpu-before.json"
bench send --server "$smtp" --ca "$work/smtp.pem" --user "$sender" --password "$password" \
  --to "$recipient" --count "$messages" --concurrency "$concurrency" --rate "$rate" \
  --tag "$run" --out "$work/send.json" 2>&1 | sed -u 's/^/  /' \
  || pec_die "not every message was submitted (see above)"
# Generous: a minute plus 1 s a message (about 2.5 messages/s on 2 busy cores).
if ! bench wait --sender "$sender" --count "$messages" --timeout $((60 + messages)) 2>&1 | sed -u 's/^/  /'; then
  bench queues --state-dir "$PEC_STATE_DIR" >/dev/null || true
  grep -m5 '"level":"ERROR"' "$runner_log" >&2 || true
  pec_die "the delivery receipts did not all arrive (runner log $runner_log)"
fi
cpu_report="$(bench cpu --since "$work/cpu-before.json" "${processes[@]}")"
kill -TERM "$runner_pid"
wait "$runner_pid" || true
runner_pid=
echo
bench report --sender "$sender" --recipient "$recipient" --count "$messages" --send-json "$work/send.json" \
  --runner-log "$runner_log"
echo
echo "$cpu_report"
dead_after="$(bench queues --state-dir "$PEC_STATE_DIR")"
[ "$dead_after" = "$dead_before" ] \
  || pec_log "warning: the dead-letter queues went from $dead_before to $dead_after messages during the run"

[ "$memory" = 1 ] || { echo; echo "Benchmark time: $((SECONDS / 60)) min $((SECONDS % 60)) s (set-up: build, emulators, clamd: $setup_seconds s)"; exit 0; }

echo
echo "== Peak memory of each function handling a $((big_bytes / 1000000)) MB message (one runner process per step)"
bench queues --state-dir "$PEC_STATE_DIR" --fail-if-busy >/dev/null \
  || pec_log "warning: the function queues above are not empty: the idle baselines may include that work"
functions=(IngressFunction ScanFunction SignFunction DeliverFunction ReceiptsFunction)
declare -A idle peak runs secs
mem_log="$work/memory-runner.log"
measure() { # function, [--once]
  bench rss --state-dir "$PEC_STATE_DIR" --function "$1" --log "$mem_log" ${2:-} -- \
    "$runner" --state-dir "$PEC_STATE_DIR" --only "$1" --until-idle 3
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
for f in "${functions[@]}"; do
  out="$(measure "$f" --once)"
  read -r _ kib _ <<<"$out"
  idle[$f]=$kib
done
big_id="$(bench big --user "$sender" --tenant "$run" --to "$recipient" --bytes "$big_bytes" --tag "$run" 2> >(sed -u 's/^/  /' >&2))"
for f in IngressFunction ScanFunction IngressFunction SignFunction DeliverFunction ReceiptsFunction SignFunction DeliverFunction; do
  out="$(measure "$f")"
  read -r n kib s <<<"$out"
  printf '  %-17s %d run(s)  peak %7s MiB  %5s s\n' "$f" "$n" "$(mib "$kib")" "$s"
  runs[$f]=$(( ${runs[$f]:-0} + n ))
  secs[$f]=$(awk -v a="${secs[$f]:-0}" -v b="$s" 'BEGIN { printf "%.1f", a + b }')
  [ "${peak[$f]:-0}" -ge "$kib" ] || peak[$f]=$kib
done
echo
printf '  %-17s %4s  %22s  %14s  %14s  %8s\n' FUNCTION RUNS "PEAK RSS, 30 MB MSG" "IDLE BASELINE" "DIFFERENCE" "TIME"
for f in "${functions[@]}"; do
  printf '  %-17s %4d  %18s MiB  %10s MiB  %10s MiB  %6s s\n' "$f" "${runs[$f]}" \
    "$(mib "${peak[$f]}")" "$(mib "${idle[$f]}")" "$(mib "$((peak[$f] - idle[$f]))")" "${secs[$f]}"
done
echo "  (peak RSS: ru_maxrss of each runner process from wait4(2), max over that function's runs;"
echo "   idle baseline: the same runner with that function only and empty queues, stopped after 3 s"
echo "   idle; TIME includes each run's 3 s idle wait and start-up; clamd's own memory is not included)"
echo
echo "== The $((big_bytes / 1000000)) MB message went through"
bench check-big --id "$big_id" --sender "$sender" --recipient "$recipient" \
  || pec_die "the 30 MB message did not complete the pipeline (runner log $mem_log)"
echo
echo "Benchmark time: $((SECONDS / 60)) min $((SECONDS % 60)) s (set-up: build, emulators, clamd: $setup_seconds s)"
