# shellcheck shell=bash
# Certifies the stack's KMS signing key with a development CA (what an operator does once):
# the same steps as infra/demo.sh ("Provider certificate for the KMS signing key"). Source it
# after infra/local/lib.sh, with the SDK environment exported (eval "$(infra/local/stack.sh env)")
# and the stack bootstrapped, then:
#
#   pec_certify_signing_key PEC_BINARY PKI_DIR [STACK_NAME]
#
# It (re)creates PKI_DIR with a development CA (ca.pem, ca.key.pem), issues the provider
# certificate for the key (provider.pem), uploads provider + CA (chain.pem) where the sign
# function reads its chain (PEC_SIGNING_CHAIN_KEY in the evidence bucket) and prints the
# certificate's subject and subjectAltName. Changes nothing by being sourced.

pec_certify_signing_key() { # pec binary, pki dir, [stack name]
  local pec="$1" pki="$2" stack="${3:-pec-local}"
  local resources="$PEC_STATE_DIR/$stack.resources.json" key_id chain_key bucket
  [ -f "$resources" ] || pec_die "no $resources: run infra/local/stack.sh bootstrap first"
  _pec_certify_out() { "$(pec_venv_dir)/bin/python" -c "import json,sys; print(json.load(open('$resources'))$1)"; }
  key_id="$(_pec_certify_out "['functions']['SignFunction']['environment']['PEC_SIGNING_KEY_ID']")"
  chain_key="$(_pec_certify_out "['functions']['SignFunction']['environment']['PEC_SIGNING_CHAIN_KEY']")"
  bucket="$(_pec_certify_out "['outputs']['EvidenceBucketName']")"
  rm -rf "$pki" && mkdir -p "$pki"
  "$pec" cert dev-ca --out-dir "$pki" --name "PEC Demo CA" 2>/dev/null
  "$pec" cert issue --ca-cert "$pki/ca.pem" --ca-key "$pki/ca.key.pem" --kms-key-id "$key_id" \
    --provider "Example Gestore PEC S.p.A." --domain pec.example.test --out "$pki/provider.pem"
  cat "$pki/provider.pem" "$pki/ca.pem" >"$pki/chain.pem"
  "$(pec_venv_dir)/bin/aws" s3 cp --quiet "$pki/chain.pem" "s3://$bucket/$chain_key"
  openssl x509 -in "$pki/provider.pem" -noout -subject -ext subjectAltName | sed 's/^/  /'
}
