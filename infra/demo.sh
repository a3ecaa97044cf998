#!/usr/bin/env bash
# The main job, locally: a PEC provider on the local emulators, end to end over SMTP.
#
# Installs what is missing, starts LocalStack + DynamoDB Local + clamd on 127.0.0.1, creates the
# provider's resources from template.yaml, certifies the KMS signing key with a development CA,
# creates a tenant with two mailboxes, starts every function (pec-runner: the same handlers as
# Lambda, polling the same SQS queues) with the SMTP submission gateway, and sends four messages
# through SMTP: a normal one, one to a mailbox that does not exist, one with a forbidden Bcc,
# one carrying EICAR. For each it prints the receipts and notices that reached the sender's
# mailbox (type, time, signature verdict, subject), then what the recipient received.
#
# Then a second provider (stack pec-b, pec.altro.test) on the same emulators, both certified by
# one development CA and listed in one provider index, with the mail exchange (pec-exchange)
# carrying what each sends through SES into the other's inbound: A's user writes to B's user, to
# an ordinary address and to a B mailbox that does not exist; an ordinary mail arrives at A; a
# tampered envelope arrives at B. It prints what each mailbox got, with signature verdicts, and
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
started_rspamd=0
runner_pid=""
runner_b_pid=""
exchange_pid=""
receiver_pid=""
dovecot_pid=""
dove_w=""
mirror_pid=""
cleanup() {
  local p
  if [ -n "$dovecot_pid" ]; then
    # Closing its standard input stops the demo's Dovecot (and the helper that runs it).
    [ -n "$dove_w" ] && exec {dove_w}>&- || true
    wait "$dovecot_pid" 2>/dev/null || true
  fi
  for p in "$mirror_pid" "$receiver_pid" "$exchange_pid" "$runner_b_pid" "$runner_pid"; do
    if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null || true
      wait "$p" 2>/dev/null || true
    fi
  done
  if [ "$keep" = 0 ]; then
    [ "$started_clamd" = 1 ] && infra/local/clamd.sh stop || true
    [ "$started_rspamd" = 1 ] && infra/local/rspamd.sh stop || true
    [ "$started" = 1 ] && infra/local/stack.sh stop || true
  fi
}
trap cleanup EXIT

infra/local/install.sh system python apitest dynamodb clamav spam dovecot
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started=1
fi
if ! infra/local/clamd.sh status >/dev/null 2>&1; then
  infra/local/clamd.sh start
  started_clamd=1
fi
if ! infra/local/rspamd.sh status >/dev/null 2>&1; then
  infra/local/rspamd.sh start
  started_rspamd=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local >/dev/null
eval "$(infra/local/stack.sh env)"
eval "$(infra/local/clamd.sh env)"
eval "$(infra/local/rspamd.sh env)"

echo
echo "== The local cloud"
infra/local/stack.sh status
infra/local/clamd.sh status
infra/local/rspamd.sh status

echo
echo "== Two providers (stacks pec-local and pec-b), one development CA, one provider index"
pec_build_binaries
pec=target/debug/pec
source infra/local/providers.sh
pec_providers_bootstrap
pki="$PEC_STATE_DIR/providers-pki"
pec_providers_certify "$pec" "$pki"
b_env() { (source "$PEC_STATE_DIR/pec-b.env" && "$@"); }
B_DOMAIN="$(b_env bash -c 'echo $PEC_PROVIDER_DOMAIN')"

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
remote="luigi.verdi.$run@$B_DOMAIN"
remote_missing="nessuno.$run@$B_DOMAIN"
ordinary="amico.$run@ordinaria.test"
b_env $pec tenant add studio-verdi --name "Studio Verdi" | sed 's/^/  (B) /'
echo "$password" | b_env $pec mailbox create "$remote" --tenant studio-verdi --plan standard --password-stdin --fast-hash | sed 's/^/  (B) /'

echo
echo "== Every function (pec-runner) and the SMTP submission gateway"
log="$PEC_STATE_DIR/demo-runner.log"
cert="$PEC_STATE_DIR/demo-smtp.pem"
rm -f "$cert"
# A 10 s SMS digest window (600 s in the template), so the SMS scene shows a digest.
PEC_SMS_DIGEST_SECONDS=10 target/debug/pec-runner --smtp-port 0 --imap-port 0 --api-port 0 --smtp-cert-out "$cert" >"$log" 2>&1 &
runner_pid=$!
port=""
for _ in $(seq 1 100); do
  port="$(sed -n 's/^pec-runner: smtp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
  [ -n "$port" ] && break
  kill -0 "$runner_pid" 2>/dev/null || { tail -20 "$log"; pec_die "pec-runner exited"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -20 "$log"; pec_die "the SMTP gateway did not start"; }
imap_port="$(sed -n 's/^pec-runner: imaps 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
[ -n "$imap_port" ] || { tail -20 "$log"; pec_die "the IMAP server did not start"; }
api_port=""
for _ in $(seq 1 100); do
  api_port="$(sed -n 's/^pec-runner: api 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
  [ -n "$api_port" ] && break
  sleep 0.1
done
[ -n "$api_port" ] || { tail -20 "$log"; pec_die "the API did not start"; }
grep '^pec-runner:' "$log" | sed 's/^/  /'
log_b="$PEC_STATE_DIR/demo-runner-b.log"
cert_b="$PEC_STATE_DIR/demo-smtp-b.pem"
rm -f "$cert_b"
target/debug/pec-runner --stack-name pec-b --smtp-port 0 --smtp-cert-out "$cert_b" >"$log_b" 2>&1 &
runner_b_pid=$!
port_b=""
for _ in $(seq 1 100); do
  port_b="$(sed -n 's/^pec-runner: smtp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log_b")"
  [ -n "$port_b" ] && break
  kill -0 "$runner_b_pid" 2>/dev/null || { tail -20 "$log_b"; pec_die "pec-runner (B) exited"; }
  sleep 0.1
done
[ -n "$port_b" ] || { tail -20 "$log_b"; pec_die "B's SMTP gateway did not start"; }
log_x="$PEC_STATE_DIR/demo-exchange.log"
target/debug/pec-exchange --rewrite-ids >"$log_x" 2>&1 &
exchange_pid=$!
echo "  pec-runner --stack-name pec-b (pid $runner_b_pid, smtp 127.0.0.1:$port_b), pec-exchange --rewrite-ids (pid $exchange_pid)"

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

count() { $pec mailbox list "${2:-$sender}" --json --message "$1" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
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
echo "== What their mail programs see over IMAP (Python's imaplib over IMAPS, port $imap_port)"
peek() { "$(pec_venv_dir)/bin/python" infra/local/imap_peek.py --port "$imap_port" --ca "$cert" --password "$password" "$@"; }
peek --user "$sender" --folders INBOX Sent | sed 's/^/  /'
peek --user "$recipient" --folders INBOX | sed 's/^/  /'
echo "  (Thunderbird: IMAP 127.0.0.1:$imap_port SSL/TLS, SMTP 127.0.0.1:$port STARTTLS, normal password; see README)"

echo
echo "== The integration API (http://127.0.0.1:$api_port/v1, docs/integrators.md): send, follow, download"
api="http://127.0.0.1:$api_port"
py="$(pec_venv_dir)/bin/python"
key="$($pec apikey create --tenant studio-rossi --name "gestionale demo" --scopes send,read,webhooks 2>/dev/null)"
echo "  pec apikey create --tenant studio-rossi --scopes send,read,webhooks -> ${key:0:21}… (shown once)"
# A webhook endpoint of the firm's software: tests/webhook_receiver.py verifies each delivery with
# the Standard Webhooks reference library.
hooks_dir="$PEC_STATE_DIR/demo-webhooks"
rm -rf "$hooks_dir"; mkdir -p "$hooks_dir"; echo '{}' >"$hooks_dir/endpoints.json"
: >"$hooks_dir/stdout"  # exists before the background shell opens it (the port is read from it)
"$(pec_apitest_venv_dir)/bin/python" tests/webhook_receiver.py "$hooks_dir" >"$hooks_dir/stdout" 2>"$hooks_dir/stderr" &
receiver_pid=$!
hook_port=""
for _ in $(seq 1 100); do
  hook_port="$(sed -n 's/^webhook-receiver: 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$hooks_dir/stdout")"
  [ -n "$hook_port" ] && break
  sleep 0.1
done
[ -n "$hook_port" ] || pec_die "the webhook receiver did not start: $(cat "$hooks_dir/stderr")"
made="$(curl -sS -X POST "$api/v1/webhooks" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
  --data-binary "{\"url\":\"http://127.0.0.1:$hook_port/pec\",\"events\":[\"*\"]}")"
hook_id="$(echo "$made" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["id"])')" || pec_die "POST /v1/webhooks: $made"
echo "$made" | "$py" -c 'import json,sys; d=json.load(sys.stdin); json.dump({"/pec": {"secret": d["secret"], "mode": "ok"}}, open(sys.argv[1], "w"))' "$hooks_dir/endpoints.json"
echo "  POST /v1/webhooks -> 201, $hook_id for http://127.0.0.1:$hook_port/pec, every event (secret whsec_… shown once)"
curl -sS -X POST "$api/v1/webhooks/$hook_id/ping" -H "Authorization: Bearer $key" -o /dev/null -w "  POST /v1/webhooks/$hook_id/ping -> %{http_code} (a signed pec.webhook.test event, to check the endpoint)\n"
body="$(printf '{"from":"%s","to":["%s"],"subject":"Inviata dal gestionale","text":"Documento allegato.","receipt":"completa"}' "$sender" "$recipient")"
sent="$(curl -sS -X POST "$api/v1/messages" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -H "Idempotency-Key: demo-$run" --data-binary "$body")"
api_id="$(echo "$sent" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["id"])')" || pec_die "POST /v1/messages: $sent"
echo "  POST /v1/messages -> 202, submission $api_id"
deadline=$((SECONDS + 120))
while :; do
  status="$(curl -sS "$api/v1/messages/$api_id" -H "Authorization: Bearer $key")"
  state="$(echo "$status" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(d["recipients"][0]["state"])')"
  href="$(echo "$status" | "$py" -c 'import json,sys; d=json.load(sys.stdin); print(next((e["href"] for e in d["evidence"] if e["kind"]=="avvenuta-consegna"), ""))')"
  [ "$state" = delivered ] && [ -n "$href" ] && break
  [ "$SECONDS" -lt "$deadline" ] || pec_die "the API message was not delivered within 120 s: $status"
  sleep 0.5
done
echo "$status" | "$py" -c "$(cat <<'PY'
import json, sys
d = json.load(sys.stdin)
print("  GET /v1/messages/%s: %s, identificativo %s" % (d["id"], d["state"], d["identificativo"]))
for r in d["recipients"]:
    print("    %s: %s (final: %s)" % (r["address"], r["state"], str(r["final"]).lower()))
for e in d["evidence"]:
    print("    evidence %-18s %s" % (e["kind"], e["href"]))
PY
)"
deadline=$((SECONDS + 30))
delivered_hooks() { grep -c 'pec.message.delivered' "$hooks_dir/received.jsonl" 2>/dev/null || true; }
until [ "$(delivered_hooks)" -ge 1 ] 2>/dev/null; do
  [ "$SECONDS" -lt "$deadline" ] || pec_die "no delivered event reached the webhook within 30 s"
  sleep 0.25
done
"$py" - "$hooks_dir/received.jsonl" <<'PY' || problems=$((problems + 1))
import json, sys
ok = True
for line in open(sys.argv[1]):
    r = json.loads(line)
    body = json.loads(r["body"])
    ok &= r["verified"]
    print("  webhook %-34s webhook-id %s: %s, answered %s" % (
        body["type"], r["id"][:16] + "…", "signature verified" if r["verified"] else "BAD SIGNATURE " + str(r["error"]), r["answered"]))
sys.exit(0 if ok else 1)
PY
curl -sS -X DELETE "$api/v1/webhooks/$hook_id" -H "Authorization: Bearer $key" -o /dev/null -w "  DELETE /v1/webhooks/$hook_id -> %{http_code}\n"
receipt="$PEC_STATE_DIR/demo-api-receipt.eml"
curl -sS -o "$receipt" "$api$href" -H "Authorization: Bearer $key"
if openssl smime -verify -purpose smimesign -CAfile "$pki/ca.pem" -in "$receipt" -out /dev/null 2>/dev/null; then
  echo "  the downloaded delivery receipt verifies with openssl smime -verify against the demo CA"
else
  problems=$((problems + 1)); echo "  the downloaded delivery receipt does NOT verify"
fi
[ "$problems" = 0 ] || pec_die "$problems unexpected item(s) (see above)"

echo
echo "== Between providers: A ($PEC_PROVIDER_DOMAIN) and B ($B_DOMAIN) through SES and the exchange"
id[esterno]="$(send --to "$remote" --to "$ordinary" --to "$remote_missing" --subject "Convocazione assemblea" --text "Si convoca l'assemblea per il giorno 30.")"
echo "  A -> B user, an ordinary address, a missing B mailbox: submission ${id[esterno]}"
ordinary_in="$PEC_STATE_DIR/demo-ordinary.eml"
printf 'From: Un Privato <privato@ordinaria.test>\r\nTo: %s\r\nSubject: Richiesta informazioni\r\nMessage-ID: <%s@ordinaria.test>\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBuongiorno, posta ordinaria.\r\n' \
  "$sender" "$run" "$(date -R)" >"$ordinary_in"
target/debug/pec-exchange inject --from privato@ordinaria.test --to "$sender" --eml "$ordinary_in" | sed 's/^/  ordinary mail to A: /'
count_b() { b_env $pec mailbox list "$1" --json | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
deadline=$((SECONDS + 180))
until [ "$(count "${id[esterno]}")" -ge 3 ] && [ "$(count_b "$remote")" -ge 1 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" "$log_b" "$log_x"; pec_die "the exchange between providers did not complete within 180 s"; }
  sleep 0.5
done
# A tampered envelope: the one A sent to the ordinary address, one word changed, handed to B.
outbox="$PEC_STATE_DIR/exchange/outbox/ordinaria.test"
original="$(grep -l "Convocazione assemblea" "$outbox"/*.eml 2>/dev/null | head -1 || true)"
[ -n "$original" ] || pec_die "the envelope for $ordinary is not in $outbox"
tampered="$PEC_STATE_DIR/demo-tampered.eml"
sed 's/giorno 30/giorno 31/' "$original" >"$tampered"
cmp -s "$original" "$tampered" && pec_die "could not tamper with $original"
target/debug/pec-exchange inject --from "posta-certificata@$PEC_PROVIDER_DOMAIN" --to "$remote" --eml "$tampered" | sed 's/^/  tampered envelope to B: /'
deadline=$((SECONDS + 120))
until [ "$(count_b "$remote")" -ge 2 ] && [ "$($pec mailbox list "$sender" --json | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["items"] if i["kind"]=="busta-anomalia"))')" -ge 1 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" "$log_b" "$log_x"; pec_die "the anomalies did not arrive within 120 s"; }
  sleep 0.5
done

echo
echo "-- A's sender ($sender): receipts for ${id[esterno]} (issued by A and by B)"
listing="$($pec mailbox list "$sender" --message "${id[esterno]}" --anchors "$pki/ca.pem")"
echo "$listing" | tail -n +2
problems=$((problems + $(echo "$listing" | tail -n +2 | grep -vc ' Valid ' || true)))
echo
echo "-- A's sender: the ordinary mail, wrapped in an anomaly envelope"
$pec mailbox list "$sender" --anchors "$pki/ca.pem" | grep 'busta-anomalia' || problems=$((problems + 1))
echo
echo "-- B's user ($remote): the envelope, and the tampered one as an anomaly"
listing="$(b_env $pec mailbox list "$remote" --anchors "$pki/ca.pem")"
echo "$listing" | tail -n +2
problems=$((problems + $(echo "$listing" | tail -n +2 | grep -vc ' Valid ' || true)))
flagged=0
for item in $(echo "$listing" | awk '/busta-anomalia/ {print $1}'); do
  b_env $pec mailbox show "$remote" "$item" --raw | grep -qi '^X-VerificaSicurezza: errore' && flagged=1
done
[ "$flagged" = 1 ] && echo "  (the anomaly carries X-VerificaSicurezza: errore)" || { echo "  the anomaly lacks the security flag"; problems=$((problems + 1)); }
echo
echo "-- the ordinary address ($ordinary) got the envelope as plain mail: $original"
[ "$problems" = 0 ] || pec_die "$problems unexpected item(s) (see above)"

echo
echo "== A professional order with its own domain on A, exchanging PEC with B both ways"
order="ordine-avvocati"
order_domain="ordine.example.test"
$pec tenant add "$order" --name "Ordine degli Avvocati (demo)" | sed 's/^/  /'
$pec tenant domain add "$order" "$order_domain" | sed 's/^/  /'
$pec tenant domain verify "$order" "$order_domain" --wait 30 | sed 's/^/  /'
# Re-publish the provider index: A's entry now lists the order's domain (what AgID would get).
pec_providers_certify "$pec" "$pki" >/dev/null
grep -q "^managedDomains: $order_domain\$" "$pki/provider-index.ldif" || pec_die "the provider index does not list $order_domain"
echo "  provider index: A's entry lists $PEC_PROVIDER_DOMAIN and $order_domain (pec provider-index export)"
member="avv.rossi.$run@$order_domain"
echo "$password" | $pec mailbox create "$member" --tenant "$order" --plan pro --password-stdin --fast-hash | sed 's/^/  /'
$pec mailbox plan "$member" gold-plus --expansion-gb 1 | sed 's/^/  /'
$pec mailbox plan "$member" silver --expansion-gb 2 2>&1 | sed 's/^/  refused: /' || true
id[ordine]="$(echo "$password" | $pec send --server "127.0.0.1:$port" --ca "$cert" --user "$member" --password-stdin \
  --to "$remote" --subject "Parere del Consiglio dell'Ordine" --text "Si trasmette il parere richiesto.")"
id_b="$(echo "$password" | $pec send --server "127.0.0.1:$port_b" --ca "$cert_b" --user "$remote" --password-stdin \
  --to "$member" --subject "Istanza allo Ordine" --text "Si chiede l'iscrizione all'albo.")"
echo "  $member -> $remote: submission ${id[ordine]} (at A)"
echo "  $remote -> $member: submission $id_b (at B)"
got_envelope() { $pec mailbox list "$member" --json | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin)["items"] if i["kind"] in ("posta-certificata", "busta-trasporto") and "Istanza" in i["subject"]))'; }
count_b_msg() { b_env $pec mailbox list "$remote" --json --message "$1" | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))'; }
deadline=$((SECONDS + 180))
until [ "$(count "${id[ordine]}" "$member")" -ge 2 ] && [ "$(count_b_msg "$id_b")" -ge 2 ] && [ "$(got_envelope)" -ge 1 ]; do
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" "$log_b" "$log_x"; pec_die "the order's exchange with B did not complete within 180 s"; }
  sleep 0.5
done
echo
echo "-- the order's member ($member): acceptance by A, delivery receipt by B, B's envelope"
listing="$($pec mailbox list "$member" --anchors "$pki/ca.pem")"
echo "$listing" | tail -n +2
problems=$((problems + $(echo "$listing" | tail -n +2 | grep -vc ' Valid ' || true)))
echo
echo "-- B's user ($remote): for $id_b, acceptance by B and the delivery receipt A issued for $order_domain"
listing="$(b_env $pec mailbox list "$remote" --message "$id_b" --anchors "$pki/ca.pem")"
echo "$listing" | tail -n +2
problems=$((problems + $(echo "$listing" | tail -n +2 | grep -vc ' Valid ' || true)))
echo "$listing" | grep -q 'avvenuta-consegna' || { echo "  no delivery receipt from A"; problems=$((problems + 1)); }
[ "$problems" = 0 ] || pec_die "$problems unexpected item(s) (see above)"

echo
echo "== Mass sending: 20 personalised PEC from one list (.csv), each with its own receipts, in the job's folder"
ufficio="ufficio.$run@$PEC_PROVIDER_DOMAIN"
echo "$password" | $pec mailbox create "$ufficio" --tenant studio-rossi --plan pro --password-stdin --fast-hash | sed 's/^/  /'
lista="$PEC_STATE_DIR/demo-lista.csv"
{
  printf 'Cognome;Nome;PEC;Importo\n'
  for i in $(seq 1 17); do
    echo "$password" | b_env $pec mailbox create "cliente$i.$run@$B_DOMAIN" --tenant studio-verdi --plan standard --password-stdin --fast-hash >/dev/null
    printf 'Numero %s;Cliente;cliente%s.%s@%s;%s,50\n' "$i" "$i" "$run" "$B_DOMAIN" "$((i * 10))"
  done
  printf 'Privato;Ugo;%s;99,00\n' "$ordinary"
  printf 'Assente;Nessuno;%s;1,00\n' "$remote_missing"
  printf 'Rotto;Indirizzo;non-un-indirizzo;5,00\n'
} >"$lista"
printf 'Gentile {{ Nome }} {{ Cognome }},\nrisulta da saldare l'"'"'importo di EUR {{ Importo }}.\n' >"$PEC_STATE_DIR/demo-lista.txt"
echo "  17 clients at B, an ordinary address, a missing mailbox at B, a broken row"
$pec bulk send --list "$lista" --from "$ufficio" --name "Solleciti $run" \
  --subject 'Sollecito di pagamento per {{ Nome }} {{ Cognome }}' --body "$PEC_STATE_DIR/demo-lista.txt" \
  --wait-seconds 120 2>/dev/null | tee "$PEC_STATE_DIR/demo-bulk.out" | sed 's/^/  /'
job="$(sed -n 's/^job \(job-[^:]*\): .* rows to send.*/\1/p' "$PEC_STATE_DIR/demo-bulk.out")"
[ -n "$job" ] || pec_die "pec bulk send made no job"
# Settled: the 17 delivered, the missing mailbox's non-delivery back from B, the ordinary
# address handed over.
bulk_settled() { $pec bulk report "$job" | "$py" -c 'import csv,sys
rows = list(csv.DictReader(sys.stdin))
n = lambda *o: sum(1 for r in rows if r["outcome"] in o)
print("yes" if n("delivered") == 17 and n("not-delivered") == 1 and n("dispatched", "taken-in-charge") == 1 else "no")'; }
deadline=$((SECONDS + 240))
until [ "$(bulk_settled)" = yes ]; do
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" "$log_b"; pec_die "the mass-sending job did not settle within 240 s"; }
  sleep 1
done
$pec bulk status "$job" | "$py" -c 'import json,sys
s = json.load(sys.stdin)
print("  job %s: %s, %d rows sent, %d delivered, %d failed, %d set aside; folder %r" % (s["job"], s["status"], s["submitted"], s["delivered"], s["failed"], s["skipped"], s["folder"]))
sys.exit(0 if (s["submitted"], s["delivered"], s["failed"], s["skipped"]) == (19, 17, 1, 1) else 1)' || pec_die "the job's counts are not 19 sent, 17 delivered, 1 failed, 1 set aside"
# The integrator's view of the same job (GET /v1/bulk-jobs/{id}, the tenant's API key), then a
# pause and a resume through it: nothing is left to hand out.
curl -sS "http://127.0.0.1:$api_port/v1/bulk-jobs/$job" -H "Authorization: Bearer $key" | "$py" -c 'import json,sys
s = json.load(sys.stdin)
print("  GET /v1/bulk-jobs/%s… -> %s, %d of %d rows submitted" % (s["id"][:24], s["status"], s["submitted"], s["rows"]))
sys.exit(0 if s["status"] == "submitted" else 1)' || pec_die "GET /v1/bulk-jobs did not show the job submitted"
for action in pause resume; do
  curl -sS -X POST "http://127.0.0.1:$api_port/v1/bulk-jobs/$job/$action" -H "Authorization: Bearer $key" \
    | "$py" -c 'import json,sys; s = json.load(sys.stdin); print("  POST …/%s -> %s" % (sys.argv[1], s["status"]))' "$action"
done
echo "  the report, failures only (pec bulk report $job --failures):"
$pec bulk report "$job" --failures | cut -d, -f1,2,3,7,8 | sed 's/^/    /'
$pec mailbox list "$ufficio" --json | "$py" -c 'import json,sys
items = json.load(sys.stdin)["items"]
folders = sorted({i.get("folder") or "INBOX" for i in items})
print("  %s holds %d receipts and notices, in %s" % (sys.argv[1], len(items), ", ".join(folders)))
sys.exit(0 if folders == [sys.argv[2]] else 1)' "$ufficio" "Invii massivi/Solleciti $run ($job)" || pec_die "the job's receipts are not all in its folder"

echo
echo "== The order's members in bulk: a table of 12 (.xlsx) to mailboxes and one-time activation links"
soci="$PEC_STATE_DIR/demo-soci.xlsx"
target/debug/examples/members_table 12 "$soci" "socio-$run" | sed 's/^/  /'
printf 'Nome;Cognome;Codice fiscale;E-mail\nUgo;Neri;RSSMRA85T10A562X;ugo@contatti.example.com\n' >"$PEC_STATE_DIR/demo-soci-bad.csv"
$pec mailbox import "$soci" --tenant "$order" --domain "$order_domain" \
  --activation-url "http://127.0.0.1:$api_port/attiva" --report "$PEC_STATE_DIR/demo-soci.report.csv" | sed 's/^/  /'
head -4 "$PEC_STATE_DIR/demo-soci.report.csv" | sed 's/^/  report: /'
$pec mailbox import "$PEC_STATE_DIR/demo-soci-bad.csv" --tenant "$order" --domain "$order_domain" \
  --activation-url "http://127.0.0.1:$api_port/attiva" --report "$PEC_STATE_DIR/demo-soci-bad.report.csv" 2>&1 | sed 's/^/  /' || true
$pec mailbox import "$soci" --tenant "$order" --domain "$order_domain" \
  --activation-url "http://127.0.0.1:$api_port/attiva" --report "$PEC_STATE_DIR/demo-soci.report2.csv" | sed 's/^/  again: /'
# The order's own secretary does the same over HTTP with an admin key, then rotates that key.
order_admin="$($pec apikey create --tenant "$order" --name "segreteria" --scopes admin 2>/dev/null)"
target/debug/examples/members_table 3 "$PEC_STATE_DIR/demo-soci-api.xlsx" "api-$run" >/dev/null
curl -sS -X POST "http://127.0.0.1:$api_port/v1/members/import?domain=$order_domain&plan=pro" \
  -H "Authorization: Bearer $order_admin" \
  -H 'Content-Type: application/vnd.openxmlformats-officedocument.spreadsheetml.sheet' \
  --data-binary "@$PEC_STATE_DIR/demo-soci-api.xlsx" | "$py" -c 'import json,sys
r = json.load(sys.stdin)
print("  POST /v1/members/import (3 rows, .xlsx): created %d, existing %d, refused %d, complete %s" % (r["created"], r["existing"], r["refused"], r["complete"]))
for row in r["rows"]: print("    row %d %s %s" % (row["row"], row["address"], row["outcome"]))
sys.exit(0 if r["created"] == 3 else 1)' || pec_die "the import over HTTP did not create 3 mailboxes"
order_admin_id="$(echo "$order_admin" | cut -d_ -f2)"
curl -sS -X POST "http://127.0.0.1:$api_port/v1/api-keys/$order_admin_id/rotate" \
  -H "Authorization: Bearer $order_admin" -H 'Content-Type: application/json' -d '{"grace_seconds": 0}' \
  | "$py" -c 'import json,sys; r = json.load(sys.stdin); print("  POST /v1/api-keys/%s/rotate -> %s… (shown once)" % (sys.argv[1], r["key"][:21]))' "$order_admin_id"
old_code="$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api_port/v1/api-keys" -H "Authorization: Bearer $order_admin")"
echo "  the old key now: HTTP $old_code"
[ "$old_code" = 401 ] || pec_die "a key rotated without grace still works"
# The first member's activation mail went out through SES; the exchange put it in the outbox of
# the (ordinary) contact domain. Its link's token activates the mailbox once.
first_member="$(sed -n '2p' "$PEC_STATE_DIR/demo-soci.report.csv" | cut -d, -f3)"
outbox_c="$PEC_STATE_DIR/exchange/outbox/contatti.example.com"
deadline=$((SECONDS + 60))
mail_file=""
until [ -n "$mail_file" ]; do
  # This run's contact address (the outbox outlives a restarted stack and its older mails).
  mail_file="$(grep -l "socio-$run\.0@" "$outbox_c"/*.eml 2>/dev/null | head -1 || true)"
  [ -n "$mail_file" ] && break
  [ "$SECONDS" -lt "$deadline" ] || pec_die "the activation mail for $first_member did not arrive within 60 s"
  sleep 0.5
done
token="$("$py" -c 'import email,sys,re; m=email.message_from_binary_file(open(sys.argv[1],"rb")); b=m.get_payload(decode=True).decode(); print(re.search(r"/attiva#(\S+)", b).group(1))' "$mail_file")"
echo "  activation mail to $(sed -n 's/^To: //p' "$mail_file" | head -1): link http://127.0.0.1:$api_port/attiva#${token:0:8}… (no password in it)"
act() { curl -sS -o /dev/null -w '%{http_code}' -X POST "$api/v1/activation" -H 'Content-Type: application/json' \
  --data-binary "{\"token\":\"$token\",\"password\":\"scelta-dal-socio-$run\"}"; }
echo "  POST /v1/activation -> $(act) (password chosen); the same link again -> $(act)"
login_code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$api/v1/auth/login" -H 'Content-Type: application/json' \
  --data-binary "{\"address\":\"$first_member\",\"password\":\"scelta-dal-socio-$run\"}")"
echo "  POST /v1/auth/login as $first_member -> $login_code"
[ "$login_code" = 200 ] || pec_die "the activated member could not log in"

echo
echo "== A member brings her PEC mailbox from another provider (Dovecot on 127.0.0.1 here) over IMAPS"
dove_fifo="$PEC_STATE_DIR/demo-dovecot.in"
dove_out="$PEC_STATE_DIR/demo-dovecot.out"
rm -f "$dove_fifo" "$dove_out"
mkfifo "$dove_fifo"
old_user="avv.rossi@pec.vecchio.example"
old_password="vecchia-password-$run"
target/debug/examples/dovecot "$old_user" "$old_password" 24 <"$dove_fifo" >"$dove_out" 2>&1 &
dovecot_pid=$!
exec {dove_w}>"$dove_fifo"
deadline=$((SECONDS + 30))
until grep -q '^imaps=' "$dove_out" 2>/dev/null; do
  kill -0 "$dovecot_pid" 2>/dev/null || { cat "$dove_out"; pec_die "the demo's Dovecot did not start"; }
  [ "$SECONDS" -lt "$deadline" ] || { cat "$dove_out"; pec_die "the demo's Dovecot did not listen within 30 s"; }
  sleep 0.2
done
dove_line="$(grep '^imaps=' "$dove_out")"
dove_imaps="$(echo "$dove_line" | sed 's/.*imaps=\([^ ]*\).*/\1/')"
dove_cert="$(echo "$dove_line" | sed 's/.*cert=\([^ ]*\).*/\1/')"
echo "  the old provider: imaps://$dove_imaps, 24 messages in INBOX, Sent (\\Sent) and \"Posta eliminata\""
from="imaps://${old_user/@/%40}@$dove_imaps"
echo "$old_password" | $pec mailbox transfer "$member" --from "$from" --ca-file "$dove_cert" --password-stdin --limit 10 | sed 's/^/  /'
echo "$old_password" | $pec mailbox transfer "$member" --from "$from" --ca-file "$dove_cert" --password-stdin | sed 's/^/  /'
again="$(echo "$old_password" | $pec mailbox transfer "$member" --from "$from" --ca-file "$dove_cert" --password-stdin | sed -n 1p)"
echo "  again: $again"
echo "$again" | grep -q ' 0 message(s) copied, 24 already there' || pec_die "the third transfer copied something"
exec {dove_w}>&-
dove_w=""
wait "$dovecot_pid" 2>/dev/null || true
dovecot_pid=""
echo "  what the member's mail program sees of the transferred Sent and Trash (flags and dates kept):"
peek --user "$member" --folders Sent Trash | sed 's/^/    /'

echo
echo "== A mailbox's life: suspended for non-payment, resumed"
$pec mailbox suspend "$member" --reason non-payment | sed 's/^/  /'
smtp_try() { echo "$password" | $pec send --server "127.0.0.1:$port" --ca "$cert" --user "$member" --password-stdin \
  --to "$remote" --subject "Prova" --text "Prova." >/dev/null 2>&1 && echo accepted || echo refused; }
echo "  SMTP submission while suspended: $(smtp_try)"
$pec mailbox resume "$member" | sed 's/^/  /'
echo

echo
echo "== A stolen password sends spam: rspamd scores it, PEC still certifies it, the spam lockout locks"
# $first_member's password leaks: 11 spam messages (the GTUBE test pattern) in a minute. Each is
# accepted and delivered (PEC is never filtered) and its detection logged; the sweep (the
# scheduled spam-sweep function; here run at once with the same code) locks the mailbox.
gtube='XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X'
stolen="scelta-dal-socio-$run"
spam_send() { echo "$1" | $pec send --server "127.0.0.1:$port" --ca "$cert" --user "$first_member" --password-stdin \
  --to "$recipient" --subject "Offerta imperdibile" --text "$2" >/dev/null 2>&1 && echo accepted || echo refused; }
for i in $(seq 1 11); do
  [ "$(spam_send "$stolen" "Compra ora. $gtube")" = accepted ] || pec_die "spam $i was not accepted (PEC is never filtered)"
done
echo "  11 spam messages from $first_member over SMTP: all accepted and certified"
sweep_line=""
deadline=$((SECONDS + 90))
# The runner's own scheduled sweep may lock it first (then this one finds it "already-locked":
# the sends above were accepted, so the lock is this run's).
until echo "$sweep_line" | grep -Eq '"outcome":"(already-)?locked"'; do
  [ "$SECONDS" -lt "$deadline" ] || pec_die "the spam lockout did not lock $first_member within 90 s (last: $sweep_line)"
  sleep 1
  sweep_line="$($pec mailbox sweep-spam --activation-url http://127.0.0.1/attiva | grep "\"$first_member\"" || true)"
done
echo "  pec mailbox sweep-spam: $sweep_line"
echo "  again: $($pec mailbox sweep-spam --activation-url http://127.0.0.1/attiva | grep "\"$first_member\"")"
echo "  SMTP with the stolen password now: $(spam_send "$stolen" "Ancora.")"
deadline=$((SECONDS + 60))
reset_file=""
until [ -n "$reset_file" ]; do
  reset_file="$(grep -l "bloccata per spam" $(grep -l "socio-$run\.0@" "$outbox_c"/*.eml 2>/dev/null) /dev/null 2>/dev/null | head -1 || true)"
  [ -n "$reset_file" ] && break
  [ "$SECONDS" -lt "$deadline" ] || pec_die "the reset mail for $first_member did not arrive within 60 s"
  sleep 0.5
done
token="$("$py" -c 'import email,sys,re; m=email.message_from_binary_file(open(sys.argv[1],"rb")); b=m.get_payload(decode=True).decode(); print(re.search(r"/attiva#(\S+)", b).group(1))' "$reset_file")"
echo "  reset mail to $(sed -n 's/^To: //p' "$reset_file" | head -1): \"$(sed -n 's/^Subject: //p' "$reset_file" | head -1)\", link …/attiva#${token:0:8}…"
reset_code="$(curl -sS -o /dev/null -w '%{http_code}' -X POST "$api/v1/activation" -H 'Content-Type: application/json' \
  --data-binary "{\"token\":\"$token\",\"password\":\"nuova-dopo-lo-spam-$run\"}")"
echo "  POST /v1/activation with the reset link -> $reset_code (new password, lock lifted)"
[ "$reset_code" = 200 ] || pec_die "the reset link did not work"
after="$(spam_send "nuova-dopo-lo-spam-$run" "Tutto a posto.")"
echo "  SMTP with the new password: $after"
[ "$after" = accepted ] || pec_die "the mailbox does not work after its reset"

echo
echo "== SMS notification of new PEC (Gold and the other plans that include it; LocalStack keeps the SMS)"
# The sender of the first scenes reads his PEC on the phone; anna writes to him.
sms_reader="$sender"
mobile="+39333$(date +%H%M%S)0"
send_as_anna() { echo "$password" | $pec send --server "127.0.0.1:$port" --ca "$cert" --user "$recipient" --password-stdin "$@"; }
sms_log() { curl -sS "$AWS_ENDPOINT_URL/_aws/sns/sms-messages?region=$AWS_REGION&phoneNumber=%2B${mobile#+}" |
  "$py" -c 'import json,sys; [print(m["Message"]) for m in json.load(sys.stdin)["sms_messages"].get(sys.argv[1], [])]' "$mobile"; }
sms_wait() { # N: until the log holds N SMS (30 s)
  local deadline=$((SECONDS + 30))
  until [ "$(sms_log | wc -l)" -ge "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || pec_die "SMS $1 for $sms_reader did not arrive within 30 s"
    sleep 0.3
  done
}
if refused="$($pec mailbox sms "$sms_reader" --number "${mobile#+39}" 2>&1)"; then
  pec_die "SMS notification was turned on for a Standard mailbox"
fi
echo "  on Standard, refused: ${refused#pec: }"
$pec mailbox plan "$sms_reader" gold | sed -n 1p | sed 's/^/  /'
$pec mailbox sms "$sms_reader" --number "${mobile#+39}" | sed 's/^/  /'
send_as_anna --to "$sms_reader" --subject "Udienza rinviata al 12 gennaio" --text "Si comunica il rinvio." >/dev/null
sms_wait 1
echo "  SMS to $mobile: $(sms_log | sed -n 1p)"
for n in 1 2 3; do send_as_anna --to "$sms_reader" --subject "Deposito atti n. $n" --text "In allegato." >/dev/null; done
echo "  three more PEC within the window: they wait for one digest"
sms_wait 2
echo "  SMS to $mobile: $(sms_log | sed -n 2p)"
$pec mailbox sms "$sms_reader" --off | sed 's/^/  /'

echo
echo "== Password protection (plans that include it): breach data checked when a password is set; a monthly report by PEC"
# PEC_BREACH_URL is the Pwned Passwords range API in AWS; locally infra/local/pwned-sample.txt.
guarded="giulia.neri.$run@$PEC_PROVIDER_DOMAIN"
if refused="$(echo 'Password2024!' | $pec mailbox create "$guarded" --tenant studio-rossi --plan gold --password-stdin --fast-hash 2>&1)"; then
  pec_die "a password from breach data was accepted"
fi
echo "  a password from breach data, refused: ${refused#pec: }"
echo "$password" | $pec mailbox create "$guarded" --tenant studio-rossi --plan gold --password-stdin --fast-hash | sed 's/^/  /'
# A preview of this month's report (the month's own goes out on the 1st) lists today's refusal.
echo "  pec mailbox password-report --preview: $($pec mailbox password-report --preview | grep "\"$guarded\"")"
deadline=$((SECONDS + 60))
until [ "$($pec mailbox list "$guarded" --json | "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" -ge 1 ]; do
  [ "$SECONDS" -lt "$deadline" ] || pec_die "the password report did not reach $guarded within 60 s"
  sleep 0.5
done
$pec mailbox list "$guarded" --anchors "$pki/ca.pem" | sed 's/^/  /'
echo "  again the same day: $($pec mailbox password-report --preview | grep "\"$guarded\"")"

echo
echo "== ClamAV definitions kept current: freshclam (verified signed updates) into the bucket; clamd reloads"
# In AWS ClamavUpdateFunction runs every 2 hours against ClamAV's CDN. Here the same code
# (pec antivirus update) runs Debian's freshclam against a mirror on 127.0.0.1 serving
# Talos-signed test databases (the real ones cannot be fetched here): v2 in the bucket, v6 and
# its signed patches on the mirror. The scan function reads the marker and RELOADs clamd.
testdb="$(infra/antivirus/test-databases.sh)"
av_dir="$(mktemp -d)"
mkdir -p "$av_dir/www"
cp "$testdb/test-6.cvd" "$av_dir/www/test.cvd"
for n in 2 3 4 5 6; do cp "$testdb/test-$n.cdiff" "$av_dir/www/"; done
python3 infra/antivirus/mirror.py "$av_dir/www" "$av_dir/port" "$av_dir/mirror.log" 2>"$av_dir/mirror.err" &
mirror_pid=$!
for _ in $(seq 1 100); do [ -s "$av_dir/port" ] && break; sleep 0.1; done
[ -s "$av_dir/port" ] || pec_die "the demo's ClamAV mirror did not start: $(cat "$av_dir/mirror.err")"
av_py="$(pec_venv_dir)/bin/python"
# Removes what this scene leaves in the (shared, reused) bucket: before it and after it.
av_clean() {
  "$av_py" - "$PEC_EVIDENCE_BUCKET" <<'PY'
import sys, boto3
s3 = boto3.client("s3")
for key in ["config/antivirus/clamav/test.cld", "config/antivirus/clamav/test.cvd",
            "config/antivirus/clamav-version.json", "config/antivirus/clamav-state/freshclam.dat"]:
    s3.delete_object(Bucket=sys.argv[1], Key=key)
PY
}
av_clean
"$av_py" - "$PEC_EVIDENCE_BUCKET" "$testdb/test-2.cvd" <<'PY'
import sys, boto3
bucket, path = sys.argv[1:3]
boto3.client("s3").upload_file(path, bucket, "config/antivirus/clamav/test.cvd")
PY
echo "  bucket: config/antivirus/clamav/test.cvd (version 2); mirror: http://127.0.0.1:$(cat "$av_dir/port")"
av_update() {
  $pec antivirus update --mirror "http://127.0.0.1:$(cat "$av_dir/port")" --no-dns --database test --work-dir "$av_dir/fc"
}
# Prints one line of a `pec antivirus update|status` answer (JSON on stdin).
av_line() {
  "$av_py" -c '
import json, sys
r, what = json.load(sys.stdin), sys.argv[1]
if what == "update":
    v = r["marker"]["databases"]["test"]["version"]
    print("  pec antivirus update: %s; uploaded %s, deleted %s; test version %s" % (r["status"], r["uploaded"], r["deleted"], v))
elif what == "again":
    print("  again: %s (uploaded %s)" % (r["status"], r["uploaded"]))
else:
    d = r["databases"]["test"]
    print("  pec antivirus status: test v%s in %s, built %d days ago: ClamavDefinitionsStaleAlarm would fire (over 24 h)" % (d["version"], d["file"], r["age_seconds"] // 86400))
' "$1"
}
av_update | av_line update
echo "  what the mirror served: $(sed -e 's/^GET //' -e 's/ if-modified-since=[^>]*-> / -> /' "$av_dir/mirror.log" | tr '\n' ';')"
av_update | av_line again
$pec antivirus status | av_line status
echo "  (the scan function reads the marker at most every 15 minutes, swaps the files in and RELOADs clamd: shared/pec-host/tests/clamd_launch.rs)"
av_clean
kill -TERM "$mirror_pid" 2>/dev/null || true
wait "$mirror_pid" 2>/dev/null || true
mirror_pid=""
rm -rf "$av_dir"

echo
echo "== Between providers over SMTP: A's relay to B's MX and back, the envelope byte for byte"
# The exchange above stands for SES, which rewrites Message-ID and Date. Real providers speak
# SMTP to each other: both runners restart with the SMTP relay (PEC_RELAY=smtp) and an MX, each
# trusting the other's certificate, with fixed routes instead of DNS (PEC_RELAY_ROUTES).
for p in "$exchange_pid" "$runner_b_pid" "$runner_pid"; do
  [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || true
  [ -n "$p" ] && wait "$p" 2>/dev/null || true
done
exchange_pid="" runner_b_pid="" runner_pid=""
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
mx_a="$(free_port)"
mx_b="$(free_port)"
rm -f "$cert" "$cert_b"
PEC_RELAY=smtp PEC_RELAY_ROUTES="$B_DOMAIN=localhost@127.0.0.1:$mx_b" PEC_RELAY_TLS_ROOTS="$cert_b" \
  target/debug/pec-runner --smtp-port 0 --mx-port "$mx_a" --smtp-cert-out "$cert" >"$log" 2>&1 &
runner_pid=$!
PEC_RELAY=smtp PEC_RELAY_ROUTES="$PEC_PROVIDER_DOMAIN=localhost@127.0.0.1:$mx_a" PEC_RELAY_TLS_ROOTS="$cert" \
  target/debug/pec-runner --stack-name pec-b --mx-port "$mx_b" --smtp-cert-out "$cert_b" >"$log_b" 2>&1 &
runner_b_pid=$!
port=""
for _ in $(seq 1 300); do
  port="$(sed -n 's/^pec-runner: smtp 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")"
  [ -n "$port" ] && grep -q '^pec-runner: smtp mx ' "$log_b" && [ -s "$cert" ] && [ -s "$cert_b" ] && break
  kill -0 "$runner_pid" 2>/dev/null && kill -0 "$runner_b_pid" 2>/dev/null || { tail -n 20 "$log" "$log_b"; pec_die "a runner exited"; }
  sleep 0.1
done
[ -n "$port" ] || { tail -n 20 "$log" "$log_b"; pec_die "the runners did not start their SMTP servers"; }
echo "  A: pec-runner --mx-port $mx_a (mx.$PEC_PROVIDER_DOMAIN), PEC_RELAY=smtp, route $B_DOMAIN -> 127.0.0.1:$mx_b"
echo "  B: pec-runner --stack-name pec-b --mx-port $mx_b (mx.$B_DOMAIN), PEC_RELAY=smtp, route $PEC_PROVIDER_DOMAIN -> 127.0.0.1:$mx_a"
echo "  deliver hands what goes outside to the edge's relay worker (the relay queue): Lambda cannot open port 25"
b_items_before="$(count_b "$remote")"
id_smtp="$(send --to "$remote" --subject "Notifica via SMTP tra gestori" --text "Consegnata da gestore a gestore via SMTP.")"
echo "  A -> B user over SMTP: submission $id_smtp"
deadline=$((SECONDS + 180))
until [ "$(count "$id_smtp")" -ge 2 ] && [ "$(count_b "$remote")" -gt "$b_items_before" ]; do
  [ "$SECONDS" -lt "$deadline" ] || { tail -n 20 "$log" "$log_b"; pec_die "the exchange over SMTP did not complete within 180 s"; }
  sleep 0.5
done
$pec mailbox list "$sender" --message "$id_smtp" | sed 's/^/  (A) /'
grep -q "handed to the relay worker" "$log" || pec_die "A's deliver did not hand the envelope to the relay worker"
grep -q "relay worker: batch handled" "$log" || pec_die "A's edge relay worker handled no batch"
echo "  A: deliver handed signed/msg/$id_smtp/busta-trasporto.eml to the relay queue; the edge's relay worker sent it"
# B's raw inbound object is B's Return-Path and Received fields, then A's signed envelope.
"$(pec_venv_dir)/bin/python" - "$PEC_EVIDENCE_BUCKET" "$(b_env printenv PEC_RAW_BUCKET)" "$id_smtp" <<'PY'
import email, email.policy, re, sys, boto3
evidence_a, raw_b, sid = sys.argv[1:4]
s3 = boto3.client("s3")
signed = s3.get_object(Bucket=evidence_a, Key=f"signed/msg/{sid}/busta-trasporto.eml")["Body"].read()
mid = re.search(rb"(?im)^Message-ID:[ \t]*(<[^>\r\n]+>)", signed).group(1).decode()
ident = None
for part in email.message_from_bytes(signed, policy=email.policy.compat32).walk():
    if part.get_filename() == "daticert.xml":
        ident = re.search(rb"<identificativo>([^<]+)</identificativo>", part.get_payload(decode=True)).group(1).decode()
found = []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=raw_b, Prefix="inbound/"):
    for o in page.get("Contents", []):
        if o["Key"].endswith(".eml"):
            body = s3.get_object(Bucket=raw_b, Key=o["Key"])["Body"].read()
            if body.endswith(signed):
                found.append((o["Key"], body))
assert len(found) == 1, f"{len(found)} objects in {raw_b}/inbound/ end with A's signed envelope"
key, body = found[0]
head = body[: len(body) - len(signed)].decode()
names = [l.split(":", 1)[0] for l in head.split("\r\n") if l and not l[0] in " \t"]
assert names == ["Return-Path", "Received"], names
env = s3.get_object(Bucket=raw_b, Key=key[:-4] + ".json")["Body"].read().decode()
assert '"via": "mx"' in env, env
assert mid == f"<{ident}>", (mid, ident)
print(f"  B's {key}: Return-Path + Received, then A's signed envelope byte for byte ({len(signed)} bytes; via mx)")
print(f"  Message-ID at B: {mid} = the identificativo in daticert.xml (SES would have replaced it)")
print("  " + [l for l in head.split("\r\n") if "with ESMTPS" in l][0].strip())
PY
# What anyone on the Internet meets at A's MX: STARTTLS, no open relay, no backscatter.
"$(pec_venv_dir)/bin/python" - "$mx_a" "$cert" "$sender" <<'PY'
import smtplib, ssl, sys
port, ca, known = sys.argv[1:4]
with smtplib.SMTP("127.0.0.1", int(port), local_hostname="probe.ordinaria.test", timeout=30) as s:
    s.ehlo()
    assert s.has_extn("starttls") and not s.has_extn("auth"), s.esmtp_features
    s.starttls(context=ssl.create_default_context(cafile=ca))
    s.ehlo()
    s.mail("privato@ordinaria.test")
    code, text = s.rcpt("victim@elsewhere.test")
    print(f"  probe of A's MX: RCPT TO:<victim@elsewhere.test> -> {code} {text.decode()}")
    assert code == 550 and text.startswith(b"5.7.1"), (code, text)
    code, text = s.rcpt("nessuno@" + known.split("@")[1])
    print(f"  probe of A's MX: RCPT TO:<nessuno@...> from an ordinary sender -> {code} {text.decode()}")
    assert code == 550 and text.startswith(b"5.1.1"), (code, text)
    # A mailbox of ours, from an ordinary sender seen for the first time: greylisted (RFC 6647;
    # its MTA comes back after PEC_EDGE_MX_GREYLIST_SECONDS). Providers never are.
    code, text = s.rcpt(known)
    print(f"  probe of A's MX: RCPT TO:<{known}> from a new ordinary sender -> {code} {text.decode()}")
    assert code == 451 and text.startswith(b"4.7.1 Greylisted"), (code, text)
    s.rset()
PY

echo
echo "Show one:  $pec mailbox show $sender <item> --anchors $pki/ca.pem   (--raw for the bytes)"
echo "Provider log of today:  $pec log"
if [ "$keep" = 1 ]; then
  echo "Emulators left running. SDK environment:  eval \"\$(infra/local/stack.sh env)\""
  echo "Stop them with:  infra/local/clamd.sh stop; infra/local/rspamd.sh stop; infra/local/stack.sh stop"
fi
