#!/usr/bin/env bash
# Two independent PEC providers on the same local emulators, certified by one development CA
# and listed in one provider index -- what AgID's index and an accredited CA give real providers.
#
#   provider A: stack pec-local, pec.example.test, "Example Gestore PEC S.p.A." (template defaults)
#   provider B: stack pec-b,     pec.altro.test,   "Altro Gestore PEC S.p.A."
#
# Run it (after infra/local/stack.sh start):
#
#   infra/local/providers.sh [--pec PATH] [--pki-dir DIR]
#
# bootstraps both stacks (idempotent), then certifies them (below). Or source it (after
# infra/local/lib.sh, with the SDK environment exported) and call
#
#   pec_providers_certify PEC_BINARY PKI_DIR [STACK ...]        (default stacks: pec-local pec-b)
#
# for stacks that are already bootstrapped (the index lists exactly the stacks given, so give
# them all). Sourcing changes nothing by itself.
#
# What it does, for the stacks given (names, domains and keys come from each stack's
# <state dir>/<stack>.resources.json, written by the bootstrap):
#   1. one development CA in PKI_DIR (ca.pem, ca.key.pem), kept across runs;
#   2. per stack, a provider certificate for that stack's KMS signing key (the SignFunction's
#      PEC_SIGNING_KEY_ID), re-issued only when missing or no longer for that key (a restarted
#      LocalStack has new keys); chain (provider + CA) uploaded to the stack's evidence bucket
#      at the SignFunction's PEC_SIGNING_CHAIN_KEY;
#   3. ONE provider index (IGPEC LDIF, `pec provider-index export` per provider: managed
#      domains = the provider domain and every verified domain of its tenants, mailReceipt =
#      posta-certificata@<domain>) uploaded to every stack's evidence bucket at
#      PEC_PROVIDER_INDEX_KEY: each provider knows every other one (re-run after a tenant's
#      domain is verified, as a real provider sends AgID its updated entry);
#   4. the CA certificate to config/trust-anchors.pem in every evidence bucket: the trust
#      anchors the receiving point verifies other providers' signatures against (locally the
#      development CA; in AWS the accredited root(s), see ARCHITECTURE.md, "Verifying what other
#      providers send").
# An object whose content is unchanged is not written again, so a re-run adds no versions.

# shellcheck disable=SC2034
PEC_PROVIDER_STACKS=(pec-local pec-b)
# Bootstrap parameters of each stack (pec-local: the template defaults).
declare -gA PEC_PROVIDER_PARAMETERS=(
  [pec-local]=""
  [pec-b]="ProviderDomain=pec.altro.test|ProviderName=Altro Gestore PEC S.p.A."
)
PEC_TRUST_ANCHORS_KEY="config/trust-anchors.pem"

# A value from a stack's resources file: _pec_providers_value STACK PYTHON-SUBSCRIPT
_pec_providers_value() {
  local resources="$PEC_STATE_DIR/$1.resources.json"
  [ -f "$resources" ] || pec_die "no $resources: bootstrap the stack $1 first (infra/local/providers.sh does)"
  "$(pec_venv_dir)/bin/python" -c 'import json,sys; print(eval("json.load(open(sys.argv[1]))" + sys.argv[2]))' \
    "$resources" "$2"
}

# Uploads FILE to s3://BUCKET/KEY unless the object already has exactly these bytes.
_pec_providers_put() { # file, bucket, key
  local aws current
  aws="$(pec_venv_dir)/bin/aws"
  current="$(mktemp)"
  if "$aws" s3 cp --quiet "s3://$2/$3" "$current" 2>/dev/null && cmp -s "$current" "$1"; then
    rm -f "$current"
    return 0
  fi
  rm -f "$current"
  "$aws" s3 cp --quiet "$1" "s3://$2/$3"
}

# SHA-256 of a DER SubjectPublicKeyInfo: of a certificate (PEM), or of a KMS key.
_pec_providers_cert_spki() { openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -c1-64; }
_pec_providers_kms_spki() {
  "$(pec_venv_dir)/bin/aws" kms get-public-key --key-id "$1" --query PublicKey --output text \
    | base64 -d | sha256sum | cut -c1-64
}

pec_providers_certify() { # pec binary, pki dir, [stack ...]
  local pec="$1" pki="$2"
  shift 2
  local stacks=("$@")
  [ "${#stacks[@]}" -gt 0 ] || stacks=("${PEC_PROVIDER_STACKS[@]}")
  mkdir -p "$pki"
  if [ ! -f "$pki/ca.pem" ] || [ ! -f "$pki/ca.key.pem" ]; then
    rm -f "$pki/ca.pem" "$pki/ca.key.pem"
    "$pec" cert dev-ca --out-dir "$pki" --name "PEC Local Providers CA" 2>/dev/null || return 1
  fi
  local index="$pki/provider-index.ldif"
  printf 'version: 1\n\n' >"$index.new"
  local stack key_id chain_key index_key anchors_key bucket domain name dir
  for stack in "${stacks[@]}"; do
    key_id="$(_pec_providers_value "$stack" "['functions']['SignFunction']['environment']['PEC_SIGNING_KEY_ID']")" || return 1
    chain_key="$(_pec_providers_value "$stack" "['functions']['SignFunction']['environment']['PEC_SIGNING_CHAIN_KEY']")" || return 1
    domain="$(_pec_providers_value "$stack" "['function_environment']['PEC_PROVIDER_DOMAIN']")" || return 1
    name="$(_pec_providers_value "$stack" "['function_environment']['PEC_PROVIDER_NAME']")" || return 1
    bucket="$(_pec_providers_value "$stack" "['outputs']['EvidenceBucketName']")" || return 1
    dir="$pki/$stack"
    mkdir -p "$dir"
    # The certificate is kept while it is for this key, this CA, this provider and domain.
    if [ ! -f "$dir/provider.pem" ] || [ ! -f "$dir/issued-for" ] \
        || [ "$(cat "$dir/issued-for")" != "$key_id $domain $name $(pec_sha12 "$pki/ca.pem")" ] \
        || [ "$(_pec_providers_cert_spki "$dir/provider.pem")" != "$(_pec_providers_kms_spki "$key_id")" ]; then
      "$pec" cert issue --ca-cert "$pki/ca.pem" --ca-key "$pki/ca.key.pem" --kms-key-id "$key_id" \
        --provider "$name" --domain "$domain" --out "$dir/provider.pem" || return 1
      echo "$key_id $domain $name $(pec_sha12 "$pki/ca.pem")" >"$dir/issued-for"
    fi
    cat "$dir/provider.pem" "$pki/ca.pem" >"$dir/chain.pem"
    _pec_providers_put "$dir/chain.pem" "$bucket" "$chain_key" || return 1
    # The entry lists the provider domain and every verified domain of its tenants (read from
    # that stack's state table): run again after `pec tenant domain verify` to publish one.
    (
      # shellcheck disable=SC1090
      source "$PEC_STATE_DIR/$stack.env"
      "$pec" provider-index export --cert "$dir/provider.pem" --provider "$name" \
        --mail-receipt "posta-certificata@$domain"
    ) >>"$index.new" || return 1
    printf '  %-10s %-18s %s (s3://%s/%s)\n' "$stack" "$domain" \
      "$(openssl x509 -in "$dir/provider.pem" -noout -subject)" "$bucket" "$chain_key"
  done
  mv "$index.new" "$index"
  for stack in "${stacks[@]}"; do
    bucket="$(_pec_providers_value "$stack" "['outputs']['EvidenceBucketName']")" || return 1
    index_key="$(_pec_providers_value "$stack" "['function_environment']['PEC_PROVIDER_INDEX_KEY']")" || return 1
    _pec_providers_put "$index" "$bucket" "$index_key" || return 1
    # The receiving point reads the trust anchors for other providers' signatures from here
    # (the functions' PEC_TRUST_ANCHORS_KEY, config/trust-anchors.pem by default).
    anchors_key="$(_pec_providers_value "$stack" \
      "['function_environment'].get('PEC_TRUST_ANCHORS_KEY') or '$PEC_TRUST_ANCHORS_KEY'")" || return 1
    _pec_providers_put "$pki/ca.pem" "$bucket" "$anchors_key" || return 1
  done
  echo "  provider index ($(grep -c '^dn: ' "$index") providers): $index"
  echo "  trust anchors (development CA): $pki/ca.pem -> $PEC_TRUST_ANCHORS_KEY"
}

# Bootstraps every provider stack (idempotent) with its parameters.
pec_providers_bootstrap() {
  local stack params args
  for stack in "${PEC_PROVIDER_STACKS[@]}"; do
    args=(--stack-name "$stack")
    params="${PEC_PROVIDER_PARAMETERS[$stack]:-}"
    if [ -n "$params" ]; then
      local -a parts
      IFS='|' read -r -a parts <<<"$params"
      local p
      for p in "${parts[@]}"; do args+=(--parameter "$p"); done
    fi
    "$PEC_REPO/infra/local/stack.sh" bootstrap "${args[@]}" >/dev/null || return 1
  done
}

_pec_providers_main() {
  set -euo pipefail
  source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
  local pec="" pki=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --pec) pec="$2"; shift 2 ;;
      --pki-dir) pki="$2"; shift 2 ;;
      *) echo "usage: $0 [--pec PATH] [--pki-dir DIR]" >&2; exit 2 ;;
    esac
  done
  [ -f "$PEC_STATE_DIR/stack.env" ] || pec_die "start the emulators first: infra/local/stack.sh start"
  # shellcheck disable=SC1091
  source "$PEC_STATE_DIR/stack.env"
  if [ -z "$pec" ]; then
    pec_build_binaries
    pec="${CARGO_TARGET_DIR:-$PEC_REPO/target}/debug/pec"
  fi
  pki="${pki:-$PEC_STATE_DIR/providers-pki}"
  pec_providers_bootstrap
  echo "== Two providers, one development CA, one provider index"
  pec_providers_certify "$pec" "$pki"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  _pec_providers_main "$@"
fi
