#!/usr/bin/env bash
# The main job, locally: a PEC provider on the local emulators, end to end over SMTP.
#
# Installs what is missing, starts LocalStack + DynamoDB Local + clamd on 127.0.0.1, creates the
# provider's resources from template.yaml, certifies the KMS signing key with a development CA,
# creates a tenant with two mailboxes, starts every function (pec-runner: the same handlers as
# Lambda, polling the same SQS queues) with the SMTP submission gateway, and sends four messages
# through SMTP: a normal one, one to a mailbox that does not exist, one with a forbidden Bcc,
# one carrying EICAR. For each it prints the receipts and notices that reached the sender's
# mailbox (type, time, signature verdict, subject), then what the recipient received, then
# stops what it started.
#
#   infra/demo.sh            run, then stop the emulators this run started
#   infra/demo.sh --keep     leave the emulators running (stop: infra/local/stack.sh stop)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh
keep=0
[ "${1:-}" = "--keep" ] && keep=1

started=0
started_clamd=0
runner_pid=""
cleanup() {
  if [ -n "$runner_pid" ] && kill -0 "$runner_pid" 2>/dev/null; then
    kill -TERM "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  if [ "$keep" = 0 ]; then
    [ "$started_clamd" = 1 ] && infra/local/clamd.sh stop || true
    [ "$started" = 1 ] && infra/local/stack.sh stop || true
  fi
}
trap cleanup EXIT

infra/local/install.sh system python dynamodb clamav
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started=1
fi
if ! infra/local/clamd.sh status >/dev/null 2>&1; then
  infra/local/clamd.sh start
  started_clamd=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local >/dev/null
eval "$(infra/local/stack.sh env)"
eval "$(infra/local/clamd.sh env)"

echo
echo "== The local cloud"
infra/local/stack.sh status
infra/local/clamd.sh status

echo
echo "== Provider certificate for the KMS signing key (what an operator does once)"
resources="$PEC_STATE_DIR/pec-local.resources.json"
out() { "$(pec_venv_dir)/bin/python" -c "import json,sys; print(json.load(open('$resources'))$1)"; }
key_id="$(out "['functions']['SignFunction']['environment']['PEC_SIGNING_KEY_ID']")"
chain_key="$(out "['functions']['SignFunction']['environment']['PEC_SIGNING_CHAIN_KEY']")"
bucket="$(out "['outputs']['EvidenceBucketName']")"
cargo build -q -p pec-cli -p pec-runner
pec=target/debug/pec
pki="$PEC_STATE_DIR/demo-pki"
rm -rf "$pki" && mkdir -p "$pki"
$pec cert dev-ca --out-dir "$pki" --name "PEC Demo CA" 2>/dev/null
$pec cert issue --ca-cert "$pki/ca.pem" --ca-key "$pki/ca.key.pem" --kms-key-id "$key_id" \
  --provider "$PEC_PROVIDER_NAME" --domain "$PEC_PROVIDER_DOMAIN" --out "$pki/provider.pem"
cat "$pki/provider.pem" "$pki/ca.pem" >"$pki/chain.pem"
"$(pec_venv_dir)/bin/aws" s3 cp --quiet "$pki/chain.pem" "s3://$bucket/$chain_key"
openssl x509 -in "$pki/provider.pem" -noout -subject | sed 's/^/  /'

echo
echo "== A tenant with two mailboxes"
# Fresh mailboxes on every run (a kept stack may hold earlier runs' mailboxes).
run="$(date +%H%M%S)"
sender="mario.rossi.$run@$PEC_PROVIDER_DOMAIN"
recipient="anna.bianchi.$run@$PEC_PROVIDER_DOMAIN"
missing="nessuno.$run@$PEC_PROVIDER_DOMAIN"
password="demo-password-$run"
$pec tenant add studio-rossi --name "Studio Legale Rossi" | sed 's/^/  /'
for m in "$sender" "$recipient"; do
  echo "$password" | $pec mailbox create "$m" --tenant studio-rossi --plan standard --password-stdin --fast-hash | sed 's/^/  /'
done

echo
echo "== Every function (pec-runner) and the SMTP submission gateway"
log="$PEC_STATE_DIR/demo-runner.log"
cert="$PEC_STATE_DIR/demo-smtp.pem"
rm -f "$cert"
target/debug/pec-runner --smtp-port 0 --smtp-cert-out "$cert" >"$log" 2>&1 &
runner_pid=$!
port=""
for _ in $(seq 1 100); do
  port="$(sed -n 's/^pec-runner: smtp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
  [ -n "$port" ] && break
  kill -0 "$runner_pid" 2>/dev/null || { tail -20 "$log"; pec_die "pec-runner exited"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$log"; pec_die "the SMTP gateway did not start"; }
grep '^pec-runner:' "$log" | sed 's/^/  /'

echo
echo "== Four messages submitted over SMTP (STARTTLS + AUTH) as $sender"
send() { echo "$password" | $pec send --server "127.0.0.1:$port" --ca "$cert" --user "$sender" --password-stdin "$@"; }
eicar="$PEC_STATE_DIR/demo-eicar.com"
printf '%s' 'X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR' >"$eicar"
printf '%s' '-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*' >>"$eicar"
declare -A id expect
id[normale]="$(send --to "$recipient" --subject "Diffida ad adempiere" --text "Si invita a provvedere entro 15 giorni.")"
id[inesistente]="$(send --to "$missing" --subject "Comunicazione a casella inesistente" --text "Prova.")"
id[bcc]="$(send --to "$recipient" --bcc "$recipient" --subject "Con destinatario nascosto" --text "Prova.")"
id[virus]="$(send --to "$recipient" --subject "Fattura con allegato" --text "In allegato." --attach "$eicar")"
expect=([normale]=2 [inesistente]=2 [bcc]=1 [virus]=1)
for s in normale inesistente bcc virus; do printf '  %-12s submission %s\n' "$s" "${id[$s]}"; done

count() { $pec mailbox list "$sender" --json --message "$1" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
deadline=$((SECONDS + 180))
for s in normale inesistente bcc virus; do
  until [ "$(count "${id[$s]}")" -ge "${expect[$s]}" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { tail -30 "$log"; pec_die "scenario $s: the receipts did not arrive within 180 s"; }
    sleep 0.5
  done
done

echo
echo "== What reached the sender's mailbox, per message (signature verified against the demo CA)"
problems=0
for s in normale inesistente bcc virus; do
  echo
  echo "-- $s (${id[$s]})"
  listing="$($pec mailbox list "$sender" --message "${id[$s]}" --anchors "$pki/ca.pem")"
  echo "$listing" | tail -n +2
  bad="$(echo "$listing" | tail -n +2 | grep -vc ' Valid ' || true)"
  problems=$((problems + bad))
done
echo
echo "-- the recipient's mailbox ($recipient), this run's envelope"
$pec mailbox list "$recipient" --message "${id[normale]}" --anchors "$pki/ca.pem" | tail -n +2
for s in bcc virus; do
  n="$($pec mailbox list "$recipient" --json --message "${id[$s]}" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')"
  [ "$n" = 0 ] || { echo "  the $s message reached the recipient"; problems=$((problems + 1)); }
done
[ "$problems" = 0 ] || pec_die "$problems unexpected item(s) (see above)"
echo
echo "Show one:  $pec mailbox show $sender <item> --anchors $pki/ca.pem   (--raw for the bytes)"
echo "Provider log of today:  $pec log"
if [ "$keep" = 1 ]; then
  echo "Emulators left running. SDK environment:  eval \"\$(infra/local/stack.sh env)\""
  echo "Stop them with:  infra/local/clamd.sh stop; infra/local/stack.sh stop"
fi
