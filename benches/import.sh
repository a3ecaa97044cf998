#!/usr/bin/env bash
# The bulk-import benchmark (issue #13), on the local emulators (DynamoDB Local and LocalStack
# SES stand in for DynamoDB and SES: each member costs about seven store calls and one send,
# each a local HTTP request to a Java or Python emulator, far slower than the services; the
# figures are a lower bound):
#
#  1. a members table of ROWS rows (.xlsx, made by `cargo run -p pec-members --example
#     members_table`; names repeat from row 577, so addresses collide and get numbers) imported
#     into a new tenant's verified domain with one `pec mailbox import` (release build): wall
#     time, members per second, and the report's outcome counts;
#  2. the same command again (everything already imported: nothing created, nothing sent):
#     wall time.
#
#   benches/import.sh              1,000 members
#   benches/import.sh --quick      200 members
#   benches/import.sh --rows N     N members
#
# Uses the emulators of $PEC_STATE_DIR (default .local/stack of this clone) if they run, else
# starts them, and stops only what it started. Each run makes its own tenant and domain
# (bench-import-<time>). Working files: $PEC_STATE_DIR/bench-import/. Not part of
# infra/test.sh: run it on demand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh

rows=1000
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) rows=200 ;;
    --rows) rows="${2:?--rows N}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
[[ "$rows" =~ ^[1-9][0-9]*$ ]] || pec_die "--rows needs a positive number"

work="$PEC_STATE_DIR/bench-import"
target="${CARGO_TARGET_DIR:-target}"
pec="$target/release/pec"
pec_bench_started_stack=0
cleanup() { [ "$pec_bench_started_stack" = 1 ] && infra/local/stack.sh stop || true; }
trap cleanup EXIT

echo "== Setting up (release build, emulators)"
infra/local/install.sh system python dynamodb
cargo build --release -q -p pec-cli
cargo build --release -q -p pec-members --example members_table
pec_bench_emulators
rm -rf "$work" && mkdir -p "$work"
echo
pec_bench_machine

run="bench-import-$(date -u +%Y%m%d%H%M%S)"
domain="$run.example.test"
echo
echo "== Tenant $run with its domain $domain (verified), a table of $rows members"
"$pec" tenant add "$run" --name "Import benchmark $run" | sed 's/^/  /'
"$pec" tenant domain add "$run" "$domain" --skip-index-check >/dev/null
"$pec" tenant domain verify "$run" "$domain" | sed 's/^/  /'
"$target/release/examples/members_table" "$rows" "$work/soci.xlsx" "$run" | sed 's/^/  /'

import() {
  "$pec" mailbox import "$work/soci.xlsx" --tenant "$run" --domain "$domain" \
    --activation-url https://webmail.pec.example.test/attiva --report "$work/report-$1.csv"
}
echo
echo "== pec mailbox import (first run)"
t0=$(date +%s.%N)
import first | sed 's/^/  /'
t1=$(date +%s.%N)
echo
echo "== pec mailbox import (again: everything exists)"
import again | sed 's/^/  /'
t2=$(date +%s.%N)
collided="$(grep -cE ',[a-z.]+[0-9]+@' "$work/report-first.csv" || true)"
echo
echo "== Result ($rows members)"
awk -v a="$t0" -v b="$t1" -v c="$t2" -v n="$rows" -v k="$collided" 'BEGIN {
  printf "  first import:  %7.1f s  %6.1f members/s  (mailbox, member record, activation link and mail each)\n", b - a, n / (b - a)
  printf "  second import: %7.1f s  %6.1f members/s  (one read each: nothing created, nothing sent)\n", c - b, n / (c - b)
  printf "  addresses with a collision number: %d\n", k
}'
