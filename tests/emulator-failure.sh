#!/usr/bin/env bash
# Killing LocalStack in the middle of the smoke test must make it fail promptly with a message
# that names the emulator and its log — never hang. Runs the real smoke test binary against a
# stack of its own (separate ports and state), kills LocalStack once checks are running, and
# asserts on the outcome. Prints one "N passed, N failed" line.
set -uo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$(mktemp -d /tmp/pec-emulator-failure.XXXXXX)"
export PEC_STATE_DIR="$state"
cleanup() { "$repo/infra/local/stack.sh" stop >/dev/null 2>&1; rm -rf "$state"; }
trap cleanup EXIT

fail() { echo "emulator-failure: $*" >&2; echo "emulator-failure: 0 passed, 1 failed"; exit 1; }

"$repo/infra/local/stack.sh" start || fail "could not start a stack for this check"
"$repo/infra/local/stack.sh" bootstrap >/dev/null || fail "bootstrap failed"
out="$state/smoke.out"
(cd "$repo" && PEC_SMOKE_ROUNDS=300 timeout 300 cargo test -p pec-integration --test smoke -- --test-threads=1 >"$out" 2>&1) &
runner=$!
for _ in $(seq 1 1200); do grep -q '^test round' "$out" 2>/dev/null && break; sleep 0.1; done
grep -q '^test round' "$out" || fail "the smoke test never started its checks: $(tail -5 "$out")"
sleep 1
kill -KILL "$(cat "$state/localstack.pid")" || fail "LocalStack was not running"
killed_at=$SECONDS
wait "$runner"
rc=$?
elapsed=$((SECONDS - killed_at))
[ "$rc" != 124 ] || fail "the smoke test hung: still running 300 s after start"
[ "$rc" != 0 ] || fail "the smoke test passed although LocalStack was killed"
[ "$elapsed" -le 90 ] || fail "the smoke test took ${elapsed}s to fail after LocalStack was killed"
grep -q 'LocalStack on 127.0.0.1:[0-9]* is not answering' "$out" \
  || fail "no failure names LocalStack: $(grep -m3 -A3 '^----' "$out")"
grep -q "log: $state/localstack.log" "$out" || fail "no failure names LocalStack's log $state/localstack.log"
echo "emulator-failure: smoke test failed ${elapsed}s after LocalStack was killed, naming it and its log"
grep -m1 'is not answering' "$out" | sed 's/^/emulator-failure:   /'
echo "emulator-failure: 1 passed, 0 failed"
