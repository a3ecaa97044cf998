#!/usr/bin/env bash
# Fetches the Talos-signed ClamAV *test* databases (issue #20 item 5's offline tests) and prints
# the directory that holds them.
#
# The definition updater runs the real freshclam, which verifies every database it downloads
# against keys compiled into libclamav: no locally built .cvd/.cld/.cdiff is accepted (see
# docs/design/clamav-definition-updates.md §2). ClamAV's own source tree carries a small signed
# database named `test` for its freshclam tests: test-1.cvd .. test-6.cvd (v1 and v2 have no
# signatures, v3..v6 detect EICAR) and the signed patches test-2.cdiff .. test-6.cdiff. Debian's
# source package keeps them (unit_tests/input/freshclam_testfiles/), so they come from
# deb.debian.org like every other package we use: the orig tarball of clamav 1.4.3 (pinned by
# the sha256 in its .dsc), of which only these 11 files are kept.
#
#   infra/antivirus/test-databases.sh        prints the directory (cached in $PEC_CACHE_DIR)
#
# Idempotent: a second run checks the files and prints the directory without downloading.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source infra/local/lib.sh

version="1.4.3+dfsg"
url="http://deb.debian.org/debian/pool/main/c/clamav/clamav_${version}.orig.tar.xz"
sha256="438640cfa0558745aac611c13245ebed64796b11bd1716bb9f485f3dc7478e75"
dir="$PEC_CACHE_DIR/clamav-test-databases-$version"
files=(test-1.cvd test-2.cvd test-3.cvd test-4.cvd test-5.cvd test-6.cvd
  test-2.cdiff test-3.cdiff test-4.cdiff test-5.cdiff test-6.cdiff)

complete() {
  local f
  for f in "${files[@]}"; do [ -s "$dir/$f" ] || return 1; done
}

if ! complete; then
  command -v curl > /dev/null || pec_die "curl is needed (infra/local/install.sh system)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  pec_log "downloading $url (33 MB, once)"
  curl -fsSL --retry 3 -o "$tmp/orig.tar.xz" "$url" || pec_die "cannot download $url"
  got="$(sha256sum "$tmp/orig.tar.xz" | cut -d' ' -f1)"
  [ "$got" = "$sha256" ] || pec_die "$url: sha256 $got, expected $sha256 (the .dsc's)"
  members=()
  for f in "${files[@]}"; do members+=("--wildcards" "*/unit_tests/input/freshclam_testfiles/$f"); done
  mkdir -p "$tmp/x"
  tar -xJf "$tmp/orig.tar.xz" -C "$tmp/x" "${members[@]}" \
    || pec_die "the tarball lacks unit_tests/input/freshclam_testfiles/"
  mkdir -p "$dir.new"
  for f in "${files[@]}"; do
    cp "$(find "$tmp/x" -name "$f" -path '*freshclam_testfiles*' | head -n1)" "$dir.new/$f"
  done
  rm -rf "$dir"
  mv "$dir.new" "$dir"
  complete || pec_die "extraction left $dir incomplete"
fi
echo "$dir"
