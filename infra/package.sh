#!/usr/bin/env bash
# Packages every Lambda function (each crate under functions/) as a `bootstrap` binary zipped for
# the provided.al2023 runtime, with cargo-lambda from the project's venv:
#
#   infra/package.sh [--arm64]      -> target/lambda/<function>/bootstrap and bootstrap.zip
#
# x86_64 by default (the only Rust standard library on our machines); --arm64 needs the
# aarch64-unknown-linux-gnu target installed and matches the template's Architecture=arm64.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh
target=x86_64-unknown-linux-gnu
[ "${1:-}" = "--arm64" ] && target=aarch64-unknown-linux-gnu
infra/local/install.sh python >/dev/null
functions=()
for manifest in functions/*/Cargo.toml; do
  [ -f "$manifest" ] || continue
  functions+=("$(sed -n 's/^name = "\(.*\)"/\1/p' "$manifest" | head -1)")
done
if [ "${#functions[@]}" = 0 ]; then
  echo "package: no function crates under functions/ yet; nothing to package"
  exit 0
fi
args=()
for f in "${functions[@]}"; do args+=(--package "$f"); done
PATH="$(pec_venv_dir)/bin:$PATH" cargo lambda build --release --compiler cargo --target "$target" \
  --output-format zip "${args[@]}"
# The provided.al2023 runtime has glibc 2.34 and no guaranteed OpenSSL: a binary that needs a
# newer glibc symbol or links libssl/libcrypto would fail to start in Lambda.
MAX_GLIBC="2.34"
check_binary() { # zip
  local tmp needed newest
  tmp="$(mktemp -d)"
  unzip -q -o "$1" -d "$tmp"
  [ -x "$tmp/bootstrap" ] || pec_die "$1 holds no executable bootstrap"
  needed="$(objdump -p "$tmp/bootstrap" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')"
  case "$needed" in *libssl*|*libcrypto*) pec_die "$1 links OpenSSL ($needed): build it without pec-smime's local-signer feature" ;; esac
  newest="$(objdump -T "$tmp/bootstrap" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)"
  if [ "$(printf '%s\n%s\n' "$newest" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
    pec_die "$1 needs glibc $newest; provided.al2023 has $MAX_GLIBC"
  fi
  rm -rf "$tmp"
  echo "package: $1 ($(du -h "$1" | cut -f1)); needs glibc <= $newest; links: $needed"
}
for f in "${functions[@]}"; do
  zip="target/lambda/$f/bootstrap.zip"
  [ -f "$zip" ] || pec_die "cargo lambda did not produce $zip"
  check_binary "$zip"
done
# The ClamAV layer (template.yaml ClamavLayer): x86_64 only, as the template's HasClamavLayer.
if [ "$target" = x86_64-unknown-linux-gnu ]; then
  infra/antivirus/layer.sh --out target/layers/clamav
  echo "package: target/layers/clamav/clamav-layer.zip ($(du -h target/layers/clamav/clamav-layer.zip | cut -f1))"
else
  echo "package: no ClamAV layer for arm64 (HasClamavLayer is false: clamd is not started)"
fi
