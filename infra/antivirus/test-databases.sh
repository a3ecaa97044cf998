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
# The files and their sha256 (as ClamAV's source has them since 2021): a cached copy is
# checked against these, not only for presence.
sums='a39c001ff5a02af09afc204f5710b58290dc68bdc76b6343011188179bf4d7cd  test-1.cvd
bf82fa9ef2c8c65aead0ff3d167a116515890149b7612fc23d352cd9bf8bd930  test-2.cvd
a8e7208ce38d8b8495b066e309ae9ddac03c4c32e9718b57a8261b112a98a0df  test-3.cvd
2a819bc88d28250e81f2221580fca98edae0f882f79dbfd3377aeeecc044f22c  test-4.cvd
e2c29148912adf0d408efdffd3e5cf145ca17f98d8ff94db3b78793f7421793c  test-5.cvd
3ac78063d9b428b27060b8bc9bad1fd63445a7c8e39ca91e21edda37eb15a99e  test-6.cvd
dfae880d593d5a18c2a7c04a31c7fdd6a06e128866e7d1e10dd61fa6480b0927  test-2.cdiff
7428cddfb1e804df1cfef04d06736b6a1ce415a9ef9043746d9bc9a8237f2caa  test-3.cdiff
e472dd7aad558b46cbe31ffa93c02194d09c2abb7b72bb6d8b855ebe9d6d01a1  test-4.cdiff
232b9ca2c46e91aa554fbb0c3659e20f1e0a9de20d199d974ebdbdb1a98807da  test-5.cdiff
e3df9dc60c89465253a01290c198fb20ea3b84012b2db69bfce6c99ae0a1f065  test-6.cdiff'
files=()
while read -r _ f; do files+=("$f"); done <<<"$sums"

complete() {
  [ -d "$dir" ] && (cd "$dir" && sha256sum --quiet --check --status <<<"$sums")
}

if ! complete; then
  command -v curl > /dev/null || pec_die "curl is needed (infra/local/install.sh system)"
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  pec_log "downloading $url (33 MB, once)"
  curl -fsSL --retry 3 -o "$tmp/orig.tar.xz" "$url" \
    || pec_die "cannot download $url (if Debian's pool no longer has $version, any later clamav orig tarball carries the same files: update version and sha256 here)"
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
  complete || pec_die "the extracted files in $dir do not match their pinned sha256"
fi
echo "$dir"
