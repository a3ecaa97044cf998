#!/usr/bin/env bash
# Packages every Lambda function (each crate under functions/) as a `bootstrap` binary zipped for
# the provided.al2023 runtime:
#
#   infra/package.sh [--arm64]      -> target/lambda/<function>/bootstrap and bootstrap.zip
#
# x86_64 by default (the only Rust standard library on our machines); --arm64 needs the
# aarch64-unknown-linux-gnu target installed and matches the template's Architecture=arm64.
#
# The binaries come from pec_release_build (infra/local/lib.sh): one `cargo build --release` of
# every function and the edge service with the workspace's [profile.release], so the edge image
# (infra/image/build.sh) reuses every compiled dependency. cargo-lambda (still in the venv, for
# `cargo lambda invoke`) is not the builder: its release defaults (codegen-units=1, panic=abort,
# target-cpu=haswell) differ from a plain cargo build and made the image build everything again.
# The zips are reproducible: one entry `bootstrap`, mode 0755, dated SOURCE_DATE_EPOCH (default:
# the last commit's time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh
target=x86_64-unknown-linux-gnu
[ "${1:-}" = "--arm64" ] && target=aarch64-unknown-linux-gnu
mapfile -t functions < <(pec_function_names)
pec_release_build "$target"
if [ "${#functions[@]}" = 0 ]; then
  echo "package: no function crates under functions/ yet; nothing to package"
  exit 0
fi
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 315532800)}"
for f in "${functions[@]}"; do
  mkdir -p "target/lambda/$f"
  install -m 0755 "target/$target/release/$f" "target/lambda/$f/bootstrap"
  python3 - "target/lambda/$f/bootstrap" "target/lambda/$f/bootstrap.zip" <<'PY'
import os, sys, time, zipfile
src, dst = sys.argv[1], sys.argv[2]
when = time.gmtime(max(int(os.environ["SOURCE_DATE_EPOCH"]), 315532800))[:6]  # zip dates start in 1980
entry = zipfile.ZipInfo("bootstrap", date_time=when)
entry.external_attr = (0o100755 << 16)  # a regular file, rwxr-xr-x: Lambda executes it
entry.create_system = 3  # Unix, so the mode above is honoured
entry.compress_type = zipfile.ZIP_DEFLATED
with open(src, "rb") as f, zipfile.ZipFile(dst + ".tmp", "w") as z:
    z.writestr(entry, f.read(), compresslevel=9)
os.replace(dst + ".tmp", dst)
PY
done
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
  [ -f "$zip" ] || pec_die "$zip was not written"
  check_binary "$zip"
done
# The ClamAV layer (template.yaml ClamavLayer): x86_64 only, as the template's HasClamavLayer.
if [ "$target" = x86_64-unknown-linux-gnu ]; then
  infra/antivirus/layer.sh --out target/layers/clamav
  echo "package: target/layers/clamav/clamav-layer.zip ($(du -h target/layers/clamav/clamav-layer.zip | cut -f1))"
else
  echo "package: no ClamAV layer for arm64 (HasClamavLayer is false: clamd is not started)"
fi
