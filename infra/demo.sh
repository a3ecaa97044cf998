#!/usr/bin/env bash
# The main job, locally: installs what is missing, starts the local cloud (LocalStack +
# DynamoDB Local on 127.0.0.1), creates the provider's resources from template.yaml and shows
# them. Later stages of the project extend this into the full PEC pipeline demo.
#
#   infra/demo.sh            run, then stop the emulators this run started
#   infra/demo.sh --keep     leave the emulators running (stop: infra/local/stack.sh stop)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh
keep=0
[ "${1:-}" = "--keep" ] && keep=1

started=0
cleanup() { [ "$started" = 1 ] && [ "$keep" = 0 ] && infra/local/stack.sh stop || true; }
trap cleanup EXIT

infra/local/install.sh system python dynamodb
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local

echo
echo "== The local cloud"
infra/local/stack.sh status
echo
echo "== Provider resources created from template.yaml (stack pec-local)"
"$(pec_venv_dir)/bin/python" - "$PEC_STATE_DIR/pec-local.resources.json" <<'PY'
import json, sys
data = json.load(open(sys.argv[1]))
width = max(len(k) for k in data["outputs"])
for name, value in sorted(data["outputs"].items()):
    print(f"  {name:{width}}  {value}")
print()
print("Function environment (as Lambda gets it from the template's Globals):")
for name, value in sorted(data["function_environment"].items()):
    print(f"  {name}={value}")
PY
echo
if [ "$keep" = 1 ]; then
  echo "Emulators left running. SDK environment:  eval \"\$(infra/local/stack.sh env)\""
  echo "Stop them with:                           infra/local/stack.sh stop"
fi
