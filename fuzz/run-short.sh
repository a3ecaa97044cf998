#!/usr/bin/env bash
# Short fuzz run of every target: FUZZ_SECONDS (or the first argument) seconds each, default 20.
# Exits non-zero if a target crashes (the reproducer is left in fuzz/artifacts/<target>/).
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
secs="${1:-${FUZZ_SECONDS:-20}}"
targets=(classify daticert imap_session pop3_session)

# Seed corpora (fuzz/corpus is not committed): our golden messages, the real fixtures beside
# the repository when present, the daticert seeds and the seed sessions.
mkdir -p corpus/classify corpus/daticert corpus/imap_session corpus/pop3_session
cp ../shared/pec-core/tests/golden/*.eml corpus/classify/
if [ -d ../../shared/fixtures/real ]; then
    cp ../../shared/fixtures/real/*.eml corpus/classify/
fi
cp seeds/daticert/*.xml corpus/daticert/
cp seeds/imap_session/*.bin corpus/imap_session/
cp seeds/pop3_session/*.bin corpus/pop3_session/

for t in "${targets[@]}"; do
    echo "== fuzz target $t for ${secs}s"
    extra=()
    if [ -f "dicts/$t.dict" ]; then
        extra+=(-dict="dicts/$t.dict")
    fi
    if ! cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -timeout=10 "${extra[@]}"; then
        echo "fuzz target $t FAILED: reproducer in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
echo "== all fuzz targets ran ${secs}s without a crash"
