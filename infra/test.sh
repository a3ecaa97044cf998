#!/usr/bin/env bash
# Runs every test of the project on a fresh machine or a warm one: installs what is missing
# (idempotently), checks formatting, lints, the template, then unit, golden and CLI tests, then the
# integration tests on the local emulators (started here and stopped at the end if this run started
# them), the emulator-failure check, a short fuzz run and the function packaging.
#
#   infra/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh

step() { printf '\n==== %s\n' "$*"; }
started_stack=0
cleanup() { [ "$started_stack" = 1 ] && infra/local/stack.sh stop || true; }
trap cleanup EXIT

# A one-shot run gains nothing from incremental compilation caches (several GB on disk).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "install (idempotent)"
infra/local/install.sh all
VENV="$(pec_venv_dir)"

step "template: cfn-lint and the SAM transform"
"$VENV/bin/cfn-lint" template.yaml
"$VENV/bin/python" infra/local/bootstrap.py --template template.yaml --check
"$VENV/bin/python" -m unittest discover -s infra/local -p 'test_*.py'

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
bash -n infra/local/*.sh infra/*.sh tests/*.sh .ci/run

step "unit, golden and CLI tests"
cargo test --workspace --exclude pec-integration --locked

step "integration tests on the local emulators"
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started_stack=1
fi
cargo test -p pec-integration --locked
tests/emulator-failure.sh

step "the README's main command (demo) on the same emulators"
infra/demo.sh

if [ -x fuzz/run-short.sh ]; then
  step "fuzzing (short run; see fuzz/README.md for long runs)"
  fuzz/run-short.sh
fi

step "package every function"
infra/package.sh

step "all tests passed"
