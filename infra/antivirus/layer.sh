#!/usr/bin/env bash
# Builds the ClamAV Lambda layer (issue #20 items 4 and 5) without Docker: Debian bookworm's clamd
# (clamav-daemon), freshclam (clamav-freshclam, on libfreshclam from libclamav12) and CA
# certificates (ca-certificates), unpacked with their dependency closure by mmdebstrap (extract
# variant: nothing installed, no maintainer scripts), and from that root exactly what clamd and
# freshclam need:
#
#   bin/clamd                       the real ELFs, PT_INTERP /opt/lib/ld-linux-x86-64.so.2
#   bin/freshclam
#   lib/<soname>                    every library in their DT_NEEDED closures, as Debian ships
#                                   it, INCLUDING the dynamic loader and libc (and libgcc_s.so.1,
#                                   which glibc dlopens to unwind threads on pthread_cancel/exit)
#   etc/ssl/certs/ca-certificates.crt  Debian's CA bundle (PEM), for freshclam's HTTPS
#   share/licenses/<pkg>/copyright  the copyright file of every package a file came from
#   share/clamav-layer/manifest.txt which package (and version) each file came from
#
# clamd is the scan function's (started exactly as shared/pec-host/src/clamd_launch.rs does:
# PEC_CLAMD_BINARY=/opt/bin/clamd --config-file=..., no wrapper script). freshclam is run by the
# definition updater function (docs/design/clamav-definition-updates.md §6), one-shot:
# /opt/bin/freshclam --config-file=... --stdout --no-dns --on-update-execute=EXIT_1, with
# LC_ALL=C and CURL_CA_BUNDLE=/opt/etc/ssl/certs/ca-certificates.crt. That variable is why the
# bundle is here: Debian's libcurl has /etc/ssl/certs/ca-certificates.crt compiled in, which the
# Lambda image need not have (AL2023 keeps its bundle in Red Hat's /etc/pki/tls/certs/), and with
# our own bundle the trusted roots do not depend on the Lambda image. In the unpacked root the bundle does not
# exist (update-ca-certificates writes it when the package is configured, which the extract
# variant never does), so it is built here as update-ca-certificates builds it with Debian's
# default configuration (every certificate enabled, no local ones): the files of
# /usr/share/ca-certificates/mozilla/ concatenated in C sort order, a missing final newline added.
#
# Both binaries run on whatever the Lambda image has (AL2023's glibc 2.34, or nothing at all): the
# kernel starts them through the bundled loader, and they and every library except ld.so and
# libc.so.6 carry DT_RPATH /opt/lib (patchelf). RPATH, not RUNPATH, on purpose: Lambda sets
# LD_LIBRARY_PATH=/var/lang/lib:/lib64:/usr/lib64:...:/opt/lib, which the loader searches BEFORE
# any DT_RUNPATH but AFTER DT_RPATH; with RUNPATH, AL2023's own libz, libcrypto, ... in /lib64
# would be mixed in. ld.so and libc.so.6 stay byte for byte Debian's: they need only each other,
# and both are loaded before anything is looked up. Not included: RAR support (libclamunrar is in
# Debian's non-free; libclamav looks for it in /usr/lib/x86_64-linux-gnu, does not find it and
# scans everything else) and glibc's gconv modules (iconv to other code pages: glibc looks in
# Debian's /usr/lib/x86_64-linux-gnu/gconv, absent on AL2023, and libclamav carries on without).
# Outside /opt clamd and freshclam only try, and do without: /etc/ld.so.preload, /etc/localtime
# (LogTime; TZ), the locale files of $LANG and /usr/lib/ssl/openssl.cnf. freshclam resolves a
# host name through the bundled glibc's getaddrinfo (the files and dns NSS modules are inside
# Debian's libc.so.6), so it reads the image's /etc/nsswitch.conf, /etc/hosts and
# /etc/resolv.conf, which Lambda has; an IP-literal mirror (layer-test.sh's http://127.0.0.1:PORT)
# needs none of them, so no /etc is shipped or needed besides the CA bundle. (Any other NSS module
# the image's nsswitch.conf names, e.g. myhostname, would be dlopened by name: /opt/lib first,
# through bin/freshclam's RPATH, then Lambda's LD_LIBRARY_PATH, i.e. the image's own build;
# glibc skips a module it cannot load.)
#
#   infra/antivirus/layer.sh [--out DIR]          (default DIR: .local/clamav-layer)
#
# Writes DIR/clamav-layer.zip and DIR/layer.env (CLAMAV_LAYER_ZIP, CLAMAV_LAYER_SHA256,
# CLAMAV_LAYER_BYTES, CLAMAV_LAYER_UNZIPPED_BYTES, CLAMAV_VERSION, CLAMAV_LAYER_KEY); prints the
# zip's size and sha256. Packages come from deb.debian.org: bookworm, bookworm-updates and
# bookworm-security (clamav's fixes reach stable through the security archive).
# Reproducible: every mtime is SOURCE_DATE_EPOCH (default: the last commit's time), the zip is
# written from a sorted list without extra fields, so the same commit and the same package
# versions (and the same patchelf and zip) give the same zip, byte for byte. The unpacked root
# is cached in $PEC_CACHE_DIR/clamav-layer/<key>, key = the resolved package versions (a second
# run only asks the mirror which versions are current, then patches and zips: about 15 s).
# x86_64 only for now (arm64: refused).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source infra/local/lib.sh

out=".local/clamav-layer"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || pec_die "--out needs a directory"; out="$2"; shift 2 ;;
    *) pec_die "unknown argument $1 (--out DIR)" ;;
  esac
done

case "$(uname -m)" in
  x86_64) deb_arch=amd64; triple=x86_64-linux-gnu; loader=ld-linux-x86-64.so.2 ;;
  aarch64 | arm64) pec_die "an arm64 layer is not built yet (future option: loader ld-linux-aarch64.so.1, Debian arch arm64, and a test run on arm64); the template's Architecture is x86_64" ;;
  *) pec_die "unsupported architecture $(uname -m): Lambda runs x86_64 and arm64, and only x86_64 is built" ;;
esac

mkdir -p "$out"
out="$(cd "$out" && pwd)"
infra/local/install.sh image
command -v patchelf >/dev/null || pec_die "patchelf is missing (Debian package patchelf)"
for c in readelf dpkg-deb zip unzip python3; do
  command -v "$c" >/dev/null || pec_die "$c is missing"
done
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}"

# What mmdebstrap unpacks; part of the cache key, so changing it re-extracts.
mirrors=(
  "deb http://deb.debian.org/debian bookworm main"
  "deb http://deb.debian.org/debian bookworm-updates main"
  "deb http://deb.debian.org/debian-security bookworm-security main"
)
mmdebstrap_args=(
  --variant=extract --include=clamav-daemon,clamav-freshclam,ca-certificates --architectures="$deb_arch"
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
)
cache_base="$PEC_CACHE_DIR/clamav-layer"
mkdir -p "$cache_base"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# One build at a time per cache (parallel runs share the unpacked roots).
exec 9>"$cache_base/lock"
flock 9

pec_log "resolving the dependency closure of clamav-daemon, clamav-freshclam and ca-certificates (mmdebstrap --simulate, bookworm + updates + security)"
mmdebstrap --simulate --verbose "${mmdebstrap_args[@]}" bookworm "$tmp/simulate.tar" "${mirrors[@]}" \
  >"$tmp/simulate.log" 2>&1 || { tail -20 "$tmp/simulate.log" >&2; pec_die "mmdebstrap --simulate failed (is deb.debian.org reachable?)"; }
sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) .*/\1 \2/p' "$tmp/simulate.log" | LC_ALL=C sort >"$tmp/versions"
for pkg in clamav-daemon clamav-freshclam ca-certificates; do
  grep -q "^$pkg " "$tmp/versions" || pec_die "the simulation resolved no $pkg (log: $(tail -3 "$tmp/simulate.log"))"
done
key="$( { printf '%s\n' "$deb_arch" "${mirrors[@]}" "${mmdebstrap_args[@]}"; cat "$tmp/versions"; } | sha256sum | cut -c1-16)"
cache="$cache_base/$key"

if [ -f "$cache/.complete" ]; then
  pec_log "unpacked root: cached ($cache)"
else
  pec_log "unpacking $(wc -l <"$tmp/versions") packages (mmdebstrap --variant=extract) into $cache"
  rm -rf "$cache" "$cache.partial"
  mkdir -p "$cache.partial"
  mmdebstrap --quiet --skip=cleanup/apt/cache "${mmdebstrap_args[@]}" bookworm "$cache.partial/root" "${mirrors[@]}" \
    || pec_die "mmdebstrap failed"
  mv "$cache.partial/root/var/cache/apt/archives" "$cache.partial/debs"
  rm -rf "$cache.partial/root/dev"
  # The versions actually unpacked (the archive can move between the simulation and the download).
  for deb in "$cache.partial/debs"/*.deb; do
    dpkg-deb --show --showformat='${Package} ${Version}\n' "$deb"
  done | LC_ALL=C sort >"$cache.partial/versions"
  cmp -s "$cache.partial/versions" "$tmp/versions" \
    || pec_die "the Debian archive changed during the build (versions differ from the simulation): run again"
  mv "$cache.partial" "$cache"
  touch "$cache/.complete"
  # Keep only this key's root: older ones are superseded versions.
  for old in "$cache_base"/*/; do
    old="${old%/}"
    [ "$old" = "$cache" ] || rm -rf "$old"
  done
fi
root="$cache/root"
clamav_version="$(sed -n 's/^clamav-daemon //p' "$cache/versions")"
[ "$(sed -n 's/^clamav-freshclam //p' "$cache/versions")" = "$clamav_version" ] \
  || pec_die "clamav-freshclam and clamav-daemon differ in version: $(grep '^clamav-' "$cache/versions" | tr '\n' ' ')"

pec_log "clamd's and freshclam's library closure (DT_NEEDED, resolved in the unpacked root)"
# Prints "<file in the layer>\t<path in the root>\t<package> <version>" for each binary
# (arguments layer-name=path-in-root) and every library it needs, recursively, plus what glibc
# dlopens itself (libgcc_s.so.1). Writes "<package>\t<its copyright file in the root>" to the
# licences file, for those packages and for the ones given as package=NAME (ca-certificates,
# whose files are not copied but concatenated into the CA bundle).
python3 - "$root" "$cache/debs" "$triple" "$loader" "$tmp/licenses" \
  bin/clamd=usr/sbin/clamd bin/freshclam=usr/bin/freshclam package=ca-certificates >"$tmp/closure" <<'PY'
import os, re, subprocess, sys

root, debs, triple, loader, licenses = sys.argv[1:6]
BINARIES = [a.split("=", 1) for a in sys.argv[6:] if not a.startswith("package=")]
PACKAGES = [a.split("=", 1)[1] for a in sys.argv[6:] if a.startswith("package=")]
EXTRA = ["libgcc_s.so.1"]  # dlopened by glibc (pthread_cancel / pthread_exit unwinding)
LIBDIRS = [f"lib/{triple}", f"usr/lib/{triple}", "lib64", "usr/lib64", "lib", "usr/lib"]

def die(msg):
    print(f"layer closure: {msg}", file=sys.stderr)
    sys.exit(1)

def resolve(rel):
    """rel (relative to root) with every symlink followed inside root; a relative path."""
    parts, out, hops = [p for p in rel.split("/") if p], [], 0
    while parts:
        p = parts.pop(0)
        if p in ("", "."):
            continue
        if p == "..":
            if out:
                out.pop()
            continue
        full = os.path.join(root, *out, p)
        if os.path.islink(full):
            hops += 1
            if hops > 64:
                die(f"symlink loop resolving {rel}")
            target = os.readlink(full)
            if target.startswith("/"):
                out = []
            parts = [x for x in target.split("/") if x] + parts
        else:
            out.append(p)
    return "/".join(out)

def readelf(args, path):
    return subprocess.run(["readelf", *args, "-W", os.path.join(root, path)], check=True,
                          capture_output=True, text=True).stdout

def needed(path):
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf(["-d"], path))

machine = None
def check_elf(path):
    global machine
    m = re.search(r"Machine:\s+(.*)", readelf(["-h"], path)).group(1).strip()
    machine = machine or m
    if m != machine:
        die(f"{path} is for {m}, {BINARIES[0][1]} for {machine}")

def find(soname):
    for d in LIBDIRS:
        rel = resolve(f"{d}/{soname}")
        if os.path.isfile(os.path.join(root, rel)):
            return rel
    die(f"{soname} is not in the unpacked root ({', '.join(LIBDIRS)})")

owner = {}
for deb in sorted(os.listdir(debs)):
    if not deb.endswith(".deb"):
        continue
    path = os.path.join(debs, deb)
    fields = subprocess.run(["dpkg-deb", "-f", path, "Package", "Version"], check=True,
                            capture_output=True, text=True).stdout
    f = dict(line.split(": ", 1) for line in fields.splitlines())
    listing = subprocess.run(["dpkg-deb", "-c", path], check=True, capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if line.startswith("-"):
            owner[resolve(line.split(None, 5)[5])] = (f["Package"], f["Version"])

files = {}
queue = []
for name, path in BINARIES:
    rel = resolve(path)
    check_elf(rel)
    files[name] = rel
    queue += needed(rel)
queue += EXTRA + [loader]
seen = set()
while queue:
    soname = queue.pop(0)
    if soname in seen:
        continue
    seen.add(soname)
    if "/" in soname:
        die(f"a DT_NEEDED with a path: {soname}")
    rel = find(soname)
    check_elf(rel)
    files[f"lib/{soname}"] = rel
    queue += needed(rel)
packages = set(PACKAGES)
for name in sorted(files):
    rel = files[name]
    if rel not in owner:
        die(f"no package ships {rel}")
    packages.add(owner[rel][0])
    print(f"{name}\t{rel}\t{owner[rel][0]} {owner[rel][1]}")
with open(licenses, "w") as out:
    for pkg in sorted(packages):
        # Some packages link their doc directory to another package's: resolve() follows it.
        copyright = resolve(f"usr/share/doc/{pkg}/copyright")
        if not os.path.isfile(os.path.join(root, copyright)):
            die(f"no copyright file for {pkg}")
        out.write(f"{pkg}\t{copyright}\n")
PY

pec_log "layer tree (patchelf: interpreter and RPATH /opt/lib)"
tree="$tmp/layer"
mkdir -p "$tree/bin" "$tree/lib" "$tree/etc/ssl/certs" "$tree/share/licenses" "$tree/share/clamav-layer"
while IFS=$'\t' read -r name rel pkgver; do
  mode=0644
  [ -x "$root/$rel" ] && mode=0755
  install -m "$mode" "$root/$rel" "$tree/$name"
  echo "$name $pkgver" >>"$tmp/manifest"
done <"$tmp/closure"
# The CA bundle, as update-ca-certificates writes it with every certificate of the package
# enabled (Debian's default) and no local ones: each file, a missing final newline added
# (sed '$a\'), in the order of /etc/ca-certificates.conf, which lists them sorted.
ca_dir="$root/usr/share/ca-certificates/mozilla"
bundle="$tree/etc/ssl/certs/ca-certificates.crt"
ca_count=0
while IFS= read -r -d '' crt; do
  sed -e '$a\' "$ca_dir/$crt" >>"$bundle"
  ca_count=$((ca_count + 1))
done < <(cd "$ca_dir" && find . -maxdepth 1 -name '*.crt' -type f -printf '%P\0' | LC_ALL=C sort -z)
[ "$ca_count" -ge 100 ] || pec_die "only $ca_count certificates in $ca_dir"
[ "$(grep -c -- '-----BEGIN CERTIFICATE-----' "$bundle")" = "$ca_count" ] \
  || pec_die "the CA bundle does not hold exactly one certificate per file of $ca_dir"
chmod 0644 "$bundle"
echo "etc/ssl/certs/ca-certificates.crt ca-certificates $(sed -n 's/^ca-certificates //p' "$cache/versions") ($ca_count certificates of usr/share/ca-certificates/mozilla, concatenated)" >>"$tmp/manifest"
{
  echo "# The ClamAV Lambda layer (infra/antivirus/layer.sh): Debian bookworm's packages, for $deb_arch."
  echo "# file, Debian package, version"
  LC_ALL=C sort "$tmp/manifest"
} >"$tree/share/clamav-layer/manifest.txt"
while IFS=$'\t' read -r pkg copyright; do
  install -D -m 0644 "$root/$copyright" "$tree/share/licenses/$pkg/copyright"
done <"$tmp/licenses"

interp="/opt/lib/$loader"
for bin in "$tree"/bin/*; do
  patchelf --set-interpreter "$interp" --force-rpath --set-rpath /opt/lib "$bin"
done
for lib in "$tree"/lib/*; do
  case "$(basename "$lib")" in
    "$loader" | libc.so.6) continue ;; # glibc's core, left exactly as Debian ships it
  esac
  patchelf --force-rpath --set-rpath /opt/lib "$lib"
done

# Build-time checks (layer-test.sh runs it): an ELF with the bundled interpreter, RPATH and no
# RUNPATH everywhere it was set, every DT_NEEDED present in lib/.
[ "$(cd "$tree/bin" && echo *)" = "clamd freshclam" ] || pec_die "bin/ holds $(cd "$tree/bin" && echo *), not clamd and freshclam"
for bin in "$tree"/bin/*; do
  [ "$(head -c 4 "$bin" | od -An -c | tr -d ' ')" = '177ELF' ] || pec_die "bin/$(basename "$bin") is not an ELF file"
  readelf -lW "$bin" | grep -qF "[Requesting program interpreter: $interp]" \
    || pec_die "bin/$(basename "$bin")'s interpreter is not $interp"
done
for f in "$tree"/bin/* "$tree"/lib/*; do
  dyn="$(readelf -dW "$f")"
  if grep -q '(RUNPATH)' <<<"$dyn"; then pec_die "$f has a DT_RUNPATH (Lambda's LD_LIBRARY_PATH would win over it)"; fi
  case "$(basename "$f")" in
    "$loader" | libc.so.6) ;;
    *) grep -qF '(RPATH)              Library rpath: [/opt/lib]' <<<"$dyn" || pec_die "$f has no RPATH /opt/lib" ;;
  esac
  for n in $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dyn"); do
    [ -f "$tree/lib/$n" ] || pec_die "$(basename "$f") needs $n, which is not in lib/"
  done
done
[ -z "$(find "$tree" -type l)" ] || pec_die "symlinks in the layer: $(find "$tree" -type l)"

# Reproducible zip: one mtime, fixed modes, names sorted, no directory entries, no extra fields
# (uid/gid, extended timestamps), DOS times in UTC.
find "$tree" -type d -exec chmod 0755 {} +
find "$tree" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
zip="$out/clamav-layer.zip"
rm -f "$zip" "$zip.tmp"
(cd "$tree" && find . -type f | sed 's|^\./||' | LC_ALL=C sort | TZ=UTC zip -X -D -9 -q "$zip.tmp" -@)
mv "$zip.tmp" "$zip"
bytes="$(stat -c %s "$zip")"
unzipped="$(find "$tree" -type f -printf '%s\n' | awk '{n += $1} END {print n}')"
# Lambda: a function and its layers together at most 250 MB unzipped.
[ "$unzipped" -lt 200000000 ] || pec_die "the layer is $unzipped bytes unzipped: too close to Lambda's 250 MB"
sha="$(sha256sum "$zip" | cut -d' ' -f1)"
cat >"$out/layer.env" <<EOF
CLAMAV_LAYER_ZIP=$zip
CLAMAV_LAYER_SHA256=$sha
CLAMAV_LAYER_BYTES=$bytes
CLAMAV_LAYER_UNZIPPED_BYTES=$unzipped
CLAMAV_VERSION=$clamav_version
CLAMAV_LAYER_KEY=$key
EOF
pec_log "clamd and freshclam $clamav_version, $(grep -c '^lib/' "$tmp/closure") libraries and $ca_count CA certificates from $(wc -l <"$tmp/licenses") packages"
pec_log "$zip: $bytes bytes ($(numfmt --to=iec "$bytes")B; unzipped $(numfmt --to=iec "$unzipped")B), sha256 $sha"
