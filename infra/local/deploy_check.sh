#!/usr/bin/env bash
# The deploy check (infra/local/deploy_check.py) on emulators of its own, started fresh and stopped
# at the end: template.yaml deployed by LocalStack's CloudFormation engine, compared with what
# bootstrap.py creates from the same template.
#
#   infra/local/deploy_check.sh [deploy_check.py arguments, e.g. --parameter ProviderDomain=pec.altro.test]
#
# State (logs, the pre-processed template, pec-boot.resources.json): $PEC_DEPLOY_CHECK_STATE_DIR,
# default $PEC_STATE_DIR/deploy-check (never the state of the stack the tests use). The emulators
# differ from `stack.sh start`'s in three settings, passed through the environment stack.sh
# starts LocalStack with:
#   STRICT_SERVICE_LOADING=0              DynamoDB and CloudWatch (alarms) load on first use,
#                                         though not in LOCALSTACK_SERVICES
#   CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=0  a type LocalStack lacks fails the stack instead of
#                                         "succeeding" as a no-op whose GetAtt is a placeholder
#   PEC_LOCALSTACK_DYNAMODB_URL           LocalStack's DynamoDB forwards to stack.sh's DynamoDB
#                                         Local (localstack-init/start.d/pec_dynamodb_forward.py)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

dir="${PEC_DEPLOY_CHECK_STATE_DIR:-$PEC_STATE_DIR/deploy-check}"
# It stops and wipes the emulators of that directory: never the caller's own stack.
[ "$(realpath -m "$dir")" != "$(realpath -m "$PEC_STATE_DIR")" ] \
  || pec_die "PEC_DEPLOY_CHECK_STATE_DIR must not be the stack's own PEC_STATE_DIR ($PEC_STATE_DIR)"
export PEC_STATE_DIR="$dir"
STACK="$PEC_REPO/infra/local/stack.sh"

stop() { "$STACK" stop >/dev/null 2>&1 || true; }
trap stop EXIT

# Fresh: a failed create leaves orphans in LocalStack, and the check refuses an existing stack.
stop
rm -f "$PEC_STATE_DIR"/*.resources.json "$PEC_STATE_DIR"/*.env
mkdir -p "$PEC_STATE_DIR"
PEC_DYNAMODB_PORT="${PEC_DEPLOY_CHECK_DYNAMODB_PORT:-$(pec_free_port)}"
export PEC_DYNAMODB_PORT
export PEC_LOCALSTACK_DYNAMODB_URL="http://127.0.0.1:$PEC_DYNAMODB_PORT"
export STRICT_SERVICE_LOADING=0 CFN_IGNORE_UNSUPPORTED_RESOURCE_TYPES=0
unset PEC_LOCALSTACK_PORT # a port of its own, whatever the caller's stack uses
"$STACK" start
eval "$("$STACK" env)"
"$(pec_venv_dir)/bin/python" "$PEC_REPO/infra/local/deploy_check.py" --template "$PEC_REPO/template.yaml" \
  --state-dir "$PEC_STATE_DIR" --write-template "$PEC_STATE_DIR/deployed-template.json" "$@"
