#!/usr/bin/env bash
# Runs every test of the project on a fresh machine or a warm one: installs what is missing
# (idempotently), checks formatting, lints, the template, then unit, golden and CLI tests, then the
# integration tests on the local emulators (started here and stopped at the end if this run started
# them), the emulator-failure check, the demo, the offline IAM check of every AWS call those runs
# made (infra/local/iam_check.py), a short fuzz run, the function packaging, the edge
# service's image (built without Docker, run under bubblewrap on the emulators) and the ClamAV
# Lambda layer (run in an empty root under bubblewrap).
#
#   infra/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh

# Each stage prints the time the previous one took and the disk left: a CI run's log shows where
# its minutes and gigabytes went (a full disk shows up as a linker's SIGBUS, not as ENOSPC).
stage_started=$SECONDS
step() {
  printf '\n[test.sh] %ss; %s free on disk\n' "$((SECONDS - stage_started))" \
    "$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ' || echo '?')"
  stage_started=$SECONDS
  printf '\n==== %s\n' "$*"
}
started_stack=0
cleanup() {
  local rc=$?
  [ "$rc" = 0 ] || printf '\n[test.sh] failed (exit %s) %ss into the stage; %s free on disk\n' "$rc" \
    "$((SECONDS - stage_started))" "$(df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' ')"
  [ "$started_stack" = 1 ] && infra/local/stack.sh stop || true
}
trap cleanup EXIT

# A one-shot run gains nothing from incremental compilation caches (several GB on disk).
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step "install (idempotent)"
infra/local/install.sh all
VENV="$(pec_venv_dir)"

step "template: cfn-lint, the SAM transform, sam validate --lint, checkov, the deploy check"
"$VENV/bin/cfn-lint" template.yaml
"$VENV/bin/python" infra/local/bootstrap.py --template template.yaml --check
"$VENV/bin/python" -m unittest discover -s infra/local -p 'test_*.py'
IAC="$(pec_iac_venv_dir)"
SAM_CLI_TELEMETRY=0 "$IAC/bin/sam" validate --lint --template template.yaml --region "$PEC_LOCAL_REGION"
# checkov: no failed check; every skip is inline in template.yaml with its one-line reason.
"$IAC/bin/checkov" -f template.yaml --framework cloudformation --compact --quiet --skip-download
# template.yaml deployed by LocalStack's CloudFormation on emulators of its own (fresh, stopped
# after), every resource compared with what bootstrap.py creates (infra/local/deploy_check.py).
infra/local/deploy_check.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# One feature set per dependency across every cargo selection the scripts build (one copy of each
# in target/; see the script's docstring and shared/workspace-hack).
"$VENV/bin/python" infra/local/feature_check.py
bash -n infra/local/*.sh infra/*.sh infra/antivirus/*.sh infra/image/*.sh tests/*.sh .ci/run

step "unit, golden and CLI tests"
cargo test --workspace --exclude pec-integration --locked

step "integration tests on the local emulators"
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started_stack=1
fi
# Every AWS call the functions make in the integration tests and in the demo is recorded
# (PEC_AWS_CALL_LOG, shared/pec-aws/src/call_log.rs) for the IAM check below, each run with a
# copy of the stacks' resources files as they were (a restarted stack has new KMS key ids).
iam_dir="$PEC_STATE_DIR/iam-calls"
rm -rf "$iam_dir" && mkdir -p "$iam_dir/integration" "$iam_dir/demo"
PEC_AWS_CALL_LOG="$iam_dir/integration/calls.jsonl" cargo test -p pec-integration --locked
cp "$PEC_STATE_DIR"/*.resources.json "$iam_dir/integration/"
tests/emulator-failure.sh

step "the README's main command (demo) on the same emulators"
PEC_AWS_CALL_LOG="$iam_dir/demo/calls.jsonl" infra/demo.sh
cp "$PEC_STATE_DIR"/*.resources.json "$iam_dir/demo/"

step "IAM, offline: every recorded call against its function's role in template.yaml"
"$VENV/bin/python" infra/local/iam_check.py --template template.yaml \
  --run "$iam_dir/integration/calls.jsonl" "$iam_dir/integration" \
  --run "$iam_dir/demo/calls.jsonl" "$iam_dir/demo"

if [ -x fuzz/run-short.sh ]; then
  step "fuzzing (short run; see fuzz/README.md for long runs)"
  fuzz/run-short.sh
fi

step "package every function"
infra/package.sh

step "the edge service's image (mmdebstrap + buildah, run under bubblewrap on the emulators)"
infra/image/test.sh

step "the ClamAV Lambda layer (Debian's clamd with its own loader and libc, in an empty root under bubblewrap)"
infra/antivirus/layer-test.sh

step "all tests passed"
