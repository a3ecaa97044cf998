#!/usr/bin/env bash
# The main job, locally: installs what is missing, starts the local cloud (LocalStack +
# DynamoDB Local on 127.0.0.1), creates the provider's resources from template.yaml, certifies
# the KMS signing key with a development CA, and has the sign function (run by pec-runner)
# sign provider messages built by pec-core; prints each signed message's type, signature
# verdict and subject. The pipeline issue extends this into the full PEC flow over SMTP.
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
echo "== Provider certificate for the KMS signing key (what an operator does once)"
eval "$(infra/local/stack.sh env)"
resources="$PEC_STATE_DIR/pec-local.resources.json"
out() { "$(pec_venv_dir)/bin/python" -c "import json,sys; print(json.load(open('$resources'))$1)"; }
key_id="$(out "['functions']['SignFunction']['environment']['PEC_SIGNING_KEY_ID']")"
chain_key="$(out "['functions']['SignFunction']['environment']['PEC_SIGNING_CHAIN_KEY']")"
bucket="$(out "['outputs']['EvidenceBucketName']")"
cargo build -q -p pec-cli -p pec-runner
pki="$PEC_STATE_DIR/demo-pki"
rm -rf "$pki" && mkdir -p "$pki"
target/debug/pec cert dev-ca --out-dir "$pki" --name "PEC Demo CA" 2>/dev/null
target/debug/pec cert issue --ca-cert "$pki/ca.pem" --ca-key "$pki/ca.key.pem" --kms-key-id "$key_id" \
  --provider "Example Gestore PEC S.p.A." --domain pec.example.test --out "$pki/provider.pem"
cat "$pki/provider.pem" "$pki/ca.pem" >"$pki/chain.pem"
aws() { "$(pec_venv_dir)/bin/aws" "$@"; }
aws s3 cp --quiet "$pki/chain.pem" "s3://$bucket/$chain_key"
openssl x509 -in "$pki/provider.pem" -noout -subject -ext subjectAltName | sed 's/^/  /'

echo
echo "== Signing provider messages through the sign function (KMS), run by pec-runner"
echo "   (the pipeline steps that build them arrive with the pipeline issue; until then the demo"
echo "    hands the sign step pec-core's golden messages, in the exact form steps write)"
run="demo-$(date +%s)"
kinds=(accettazione busta-trasporto avvenuta-consegna-completa mancata-consegna non-accettazione-virus)
for kind in "${kinds[@]}"; do
  aws s3 cp --quiet "shared/pec-core/tests/golden/$kind.eml" "s3://$bucket/unsigned/$run/$kind.eml"
done
target/debug/pec-runner --until-idle 3 --only SignFunction 2>&1 | grep -v '^{' || true
echo
printf '  %-28s %-26s %-10s %s\n' MESSAGE "TYPE (pec inspect)" SIGNATURE SUBJECT
problems=0
for kind in "${kinds[@]}"; do
  signed="$PEC_STATE_DIR/$run-$kind.eml"
  aws s3 cp --quiet "s3://$bucket/signed/$run/$kind.eml" "$signed"
  type="$(target/debug/pec inspect "$signed" | sed -n 's/^Type: *\([^ ]*\).*/\1/p')"
  subject="$(target/debug/pec inspect --json "$signed" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["headers"]["subject"][:60])')"
  verdict="$(target/debug/pec verify --no-index --anchors "$pki/ca.pem" "$signed" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["verdict"])')" || true
  printf '  %-28s %-26s %-10s %s\n' "$kind" "$type" "$verdict" "$subject"
  [ "$verdict" = valid ] || problems=$((problems + 1))
done
[ "$problems" = 0 ] || pec_die "$problems signed message(s) did not verify"
echo
echo "Signed messages: $PEC_STATE_DIR/$run-*.eml  (pec inspect FILE; pec verify --no-index --anchors $pki/ca.pem FILE)"
if [ "$keep" = 1 ]; then
  echo "Emulators left running. SDK environment:  eval \"\$(infra/local/stack.sh env)\""
  echo "Stop them with:                           infra/local/stack.sh stop"
fi
