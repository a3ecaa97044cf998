#!/usr/bin/env bash
# Tests the ClamAV Lambda layer built by infra/antivirus/layer.sh (issue #20 items 4 and 5): it
# must be self-contained, so clamd and freshclam run under bubblewrap in an EMPTY root: only the
# layer, read-only at /opt, and a work directory at /tmp. No /usr, /lib, /etc, no shell, no
# /proc, no /dev (neither needs any of them: they are left out so that a dependency on them would
# show here), namespaces unshared, a non-root uid as in Lambda, and Lambda's environment (its
# LD_LIBRARY_PATH included). clamd is started as the scan function starts it
# (shared/pec-host/src/clamd_launch.rs: `/opt/bin/clamd --config-file=...`, the configuration text
# taken from that file) with the project's test signatures (infra/antivirus/clamav/), and must
# answer PING and VERSION, find EICAR (generated here, never committed) and the ClamAV-only marker
# under the repo's signature names, and pass clean bytes. freshclam is run as the definition
# updater will run it (one-shot, --no-dns, --on-update-execute=EXIT_1, LC_ALL=C, CURL_CA_BUNDLE in
# the layer) against a mirror on 127.0.0.1 serving ClamAV's Talos-signed `test` database
# (infra/antivirus/test-databases.sh): v2 -> v6 through the signed cdiffs (exit 1, test.cld v6),
# then "up to date" (exit 0), then a tampered cdiff and CVD must be refused (another exit status,
# the old database untouched), and once more with the mirror named by host name, which the
# layer's libc resolves from a synthetic /etc/hosts (the only run given anything in /etc; every
# object the loader initialises, dlopened ones included, must come from /opt/lib). Also checked:
# the layer's ELF headers (interpreter /opt/lib/ld-linux-x86-64.so.2, DT_RPATH /opt/lib, no
# DT_RUNPATH), the bundled loader's --list of clamd and freshclam in the empty root resolves
# everything under /opt and together they name exactly the libraries in lib/, the same with
# Lambda's LD_LIBRARY_PATH on a full Debian system (/ visible, the layer over /opt: nothing may
# come from /lib), the CA bundle loads, and a second build is identical byte for byte.
# Printed: clamd's start time (exec to first PONG) and peak RSS (VmHWM) with the test signatures,
# and the wall time of each freshclam run.
#
#   infra/antivirus/layer-test.sh        (builds the layer first: cached, about 20 s when warm;
#                                         the freshclam part takes about 12 s, 10 of them the
#                                         retries of the tampered case)
#
# It always runs layer.sh rather than trusting an existing zip: the test is of what the current
# script builds, and a warm build only re-resolves package versions and re-zips.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source infra/local/lib.sh

out=".local/clamav-layer"
START_TIMEOUT="${PEC_CLAMD_START_TIMEOUT:-60}"
# What Lambda gives a provided.al2023 function (and so the clamd it spawns).
LAMBDA_LD_LIBRARY_PATH="/var/lang/lib:/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib"
LAMBDA_PATH="/usr/local/bin:/usr/bin/:/bin:/opt/bin"
LAMBDA_UID=993 # sbx_user1051
LAMBDA_GID=990

infra/antivirus/layer.sh --out "$out" # installs the image tools (mmdebstrap, bubblewrap) too
source "$out/layer.env"
bwrap="$(command -v bwrap)"
work="$(mktemp -d)"
bwrap_pid=""
clamd_pid=""
mirror_pid=""
cleanup() {
  [ -n "$clamd_pid" ] && kill -KILL "$clamd_pid" 2>/dev/null || true
  [ -n "$mirror_pid" ] && kill -KILL "$mirror_pid" 2>/dev/null || true
  [ -n "$bwrap_pid" ] && kill -KILL "$bwrap_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() {
  echo "clamav layer test: $*" >&2
  [ -s "$work/clamd.log" ] && { echo "---- clamd's log" >&2; tail -20 "$work/clamd.log" >&2; }
  exit 1
}

echo "== the layer: $CLAMAV_LAYER_ZIP"
echo "  clamd and freshclam $CLAMAV_VERSION; zip $CLAMAV_LAYER_BYTES bytes ($(numfmt --to=iec "$CLAMAV_LAYER_BYTES")B), unzipped $CLAMAV_LAYER_UNZIPPED_BYTES bytes ($(numfmt --to=iec "$CLAMAV_LAYER_UNZIPPED_BYTES")B), sha256 $CLAMAV_LAYER_SHA256"
infra/antivirus/layer.sh --out "$work/again" >/dev/null 2>&1 || fail "the second build failed"
second="$(sed -n 's/^CLAMAV_LAYER_SHA256=//p' "$work/again/layer.env")"
[ "$second" = "$CLAMAV_LAYER_SHA256" ] || fail "two builds of one commit differ: $CLAMAV_LAYER_SHA256 / $second"
echo "  rebuilt: identical"
rm -rf "$work/again"

layer="$work/opt"
mkdir -p "$layer"
unzip -q "$CLAMAV_LAYER_ZIP" -d "$layer"
loader=ld-linux-x86-64.so.2
interp="/opt/lib/$loader"

binaries="clamd freshclam"
echo "== its files and ELF headers"
[ "$(cd "$layer" && echo *)" = "bin etc lib share" ] || fail "the layer holds more than bin/ etc/ lib/ share/: $(cd "$layer" && echo *)"
[ "$(cd "$layer/bin" && echo *)" = "$binaries" ] || fail "bin/ holds $(cd "$layer/bin" && echo *), not $binaries"
[ "$(cd "$layer/etc" && find . -type f)" = ./ssl/certs/ca-certificates.crt ] || fail "etc/ holds more than ssl/certs/ca-certificates.crt: $(cd "$layer/etc" && find . -type f | tr '\n' ' ')"
[ -z "$(find "$layer" -type l)" ] || fail "symlinks in the layer"
[ -x "$layer/lib/$loader" ] || fail "the loader is not executable"
for b in $binaries; do
  [ "$(head -c 4 "$layer/bin/$b" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "bin/$b is not an ELF file (a script?)"
  [ -x "$layer/bin/$b" ] || fail "bin/$b is not executable"
  got_interp="$(readelf -lW "$layer/bin/$b" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')"
  [ "$got_interp" = "$interp" ] || fail "bin/$b's interpreter is '$got_interp', not $interp"
done
for f in "$layer"/bin/* "$layer"/lib/*; do
  name="${f#"$layer"/}"
  dyn="$(readelf -dW "$f")"
  if grep -q '(RUNPATH)' <<<"$dyn"; then fail "$name has a DT_RUNPATH (Lambda's LD_LIBRARY_PATH would win over it)"; fi
  rpath="$(sed -n 's/.*(RPATH).*\[\(.*\)\]/\1/p' <<<"$dyn")"
  case "$name" in
    "lib/$loader" | lib/libc.so.6) [ -z "$rpath" ] || fail "$name was patched (RPATH $rpath)" ;;
    *) [ "$rpath" = /opt/lib ] || fail "$name: RPATH is '$rpath', not /opt/lib" ;;
  esac
  for n in $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' <<<"$dyn"); do
    [ -f "$layer/lib/$n" ] || fail "$name needs $n, not in lib/"
  done
done
for pkg in clamav-daemon clamav-freshclam libclamav12 libcurl4 libc6 ca-certificates; do
  [ -s "$layer/share/licenses/$pkg/copyright" ] || fail "no licence file for $pkg"
done
echo "  bin/clamd, bin/freshclam: ELF, interpreter $interp, RPATH /opt/lib; $(ls "$layer/lib" | wc -l) libraries, RPATH /opt/lib (ld.so, libc.so.6: Debian's, untouched); no RUNPATH; $(ls "$layer/share/licenses" | wc -l) licence files"
# The CA bundle freshclam's libcurl gets through CURL_CA_BUNDLE: PEM certificates OpenSSL loads.
bundle="$layer/etc/ssl/certs/ca-certificates.crt"
[ -s "$bundle" ] || fail "etc/ssl/certs/ca-certificates.crt is missing or empty"
ca_pem="$(grep -c -- '-----BEGIN CERTIFICATE-----' "$bundle")"
ca_loaded="$(python3 -c 'import ssl, sys; print(ssl.create_default_context(cafile=sys.argv[1]).cert_store_stats()["x509_ca"])' "$bundle")" \
  || fail "OpenSSL (python3's ssl) cannot load the CA bundle"
[ "$ca_pem" -ge 100 ] && [ "$ca_loaded" = "$ca_pem" ] || fail "the CA bundle: $ca_pem PEM certificates, $ca_loaded loaded as CAs"
grep -q "^etc/ssl/certs/ca-certificates.crt ca-certificates " "$layer/share/clamav-layer/manifest.txt" || fail "the manifest does not name the CA bundle"
echo "  etc/ssl/certs/ca-certificates.crt: $(stat -c %s "$bundle") bytes, $ca_loaded CA certificates (all load)"

# The loader's view: "soname => path" lines; every path must be under /opt.
check_list() { # label listing-file
  local bad
  grep -q 'not found' "$2" && fail "$1: $(grep 'not found' "$2" | tr -s ' \t' ' ')"
  bad="$(grep -v 'linux-vdso' "$2" | sed -n 's/.*=> \([^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' | grep -v '^/opt/lib/' || true)"
  [ -z "$bad" ] || fail "$1: resolved outside /opt: $bad"
}
echo "== the bundled loader's --list in the empty root"
counts=""
for b in $binaries; do
  "$bwrap" --unshare-all --die-with-parent --ro-bind "$layer" /opt \
    "$interp" --list "/opt/bin/$b" >"$work/list-$b" 2>&1 || { cat "$work/list-$b" >&2; fail "ld.so --list /opt/bin/$b failed in the empty root"; }
  check_list "$b in the empty root" "$work/list-$b"
  counts="$counts${counts:+, }$b $(grep -c '=> /opt/lib/' "$work/list-$b")"
done
listed="$( { for b in $binaries; do sed -n 's/.*=> \/opt\/lib\/\([^ ]*\) .*/\1/p' "$work/list-$b"; done; echo "$loader"; echo libgcc_s.so.1; } | LC_ALL=C sort -u)"
[ "$listed" = "$(ls "$layer/lib" | LC_ALL=C sort)" ] \
  || fail "lib/ is not exactly what the loader maps for $binaries (+ libgcc_s.so.1): $(diff <(echo "$listed") <(ls "$layer/lib" | LC_ALL=C sort) | grep '^[<>]' | tr '\n' ' ')"
echo "  libraries ($counts) + the loader, all from /opt/lib; lib/ holds exactly their union (libgcc_s.so.1, which glibc dlopens, is allowed besides)"

echo "== the same with Lambda's LD_LIBRARY_PATH on a full Debian system (/ visible, the layer over /opt)"
for b in $binaries; do
  env -i LD_LIBRARY_PATH="/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:$LAMBDA_LD_LIBRARY_PATH" \
    "$bwrap" --unshare-all --die-with-parent --ro-bind / / --ro-bind "$layer" /opt \
    "$interp" --list "/opt/bin/$b" >"$work/list-full-$b" 2>&1 || { cat "$work/list-full-$b" >&2; fail "ld.so --list /opt/bin/$b failed on the full system"; }
  check_list "$b on the full system with LD_LIBRARY_PATH" "$work/list-full-$b"
done
shadowed=0
for lib in "$layer"/lib/*; do
  for d in /lib/x86_64-linux-gnu /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/$(basename "$lib")" ] && { shadowed=$((shadowed + 1)); break; }
  done
done
[ "$shadowed" -gt 0 ] || fail "none of the layer's libraries is on this machine: the LD_LIBRARY_PATH check proves nothing"
echo "  still all from /opt/lib, though $shadowed of the layer's $(ls "$layer/lib" | wc -l) libraries also sit in this machine's directories first on LD_LIBRARY_PATH"

echo "== clamd in the empty root (only /opt and /tmp; uid $LAMBDA_UID; Lambda's environment)"
socket="$(sed -n 's/^ *PEC_CLAMD_SOCKET: *//p' template.yaml | head -1)"
[ -n "$socket" ] || fail "no PEC_CLAMD_SOCKET in template.yaml"
mkdir -p "$work/tmp"
# The work directory as the scan function lays it out (PEC_CLAMD_WORK_DIR default /tmp/clamav):
# db/ with the definitions, tmp/, clamd.conf with the text of ClamdLaunch::write_config.
python3 - shared/pec-host/src/clamd_launch.rs "$work/tmp/clamav" "$socket" <<'PY' || fail "could not write clamd.conf from clamd_launch.rs"
import os, re, sys
src, host_dir, socket = sys.argv[1:4]
text = open(src).read()
m = re.search(r'let text = format!\(\s*\n(.*?)",\s*\n\s*socket = ', text, re.S)
if not m:
    sys.exit("clamd_launch.rs: the format! of write_config not found")
conf = ""
for line in m.group(1).splitlines():
    line = line.strip()
    line = line[1:] if line.startswith('"') else line
    line = line[:-1] if line.endswith("\\") else line
    conf += line.replace("\\n", "\n")
conf = conf.format(socket=socket, db="/tmp/clamav/db", tmp="/tmp/clamav/tmp")
keys = {l.split()[0] for l in conf.splitlines() if l and not l.startswith("#")}
missing = {"Foreground", "LocalSocket", "DatabaseDirectory", "TemporaryDirectory"} - keys
if missing:
    sys.exit(f"clamd_launch.rs: no {missing} in its configuration")
os.makedirs(os.path.join(host_dir, "db"))
os.makedirs(os.path.join(host_dir, "tmp"))
open(os.path.join(host_dir, "clamd.conf"), "w").write(conf)
print("  clamd.conf from clamd_launch.rs: " + ", ".join(l for l in conf.splitlines()
      if l.split(" ")[0] in ("Foreground", "LocalSocket", "DatabaseDirectory", "TemporaryDirectory")))
PY
cp infra/antivirus/clamav/*.ndb infra/antivirus/clamav/*.hdb "$work/tmp/clamav/db/"
host_socket="$work/tmp/${socket#/tmp/}"
[ "${socket#/tmp/}" != "$socket" ] || fail "PEC_CLAMD_SOCKET $socket is not under /tmp"

started_ns="$(date +%s%N)"
env -i LANG=en_US.UTF-8 TZ=:UTC PATH="$LAMBDA_PATH" LD_LIBRARY_PATH="$LAMBDA_LD_LIBRARY_PATH" \
  "$bwrap" --unshare-all --unshare-user --uid "$LAMBDA_UID" --gid "$LAMBDA_GID" --die-with-parent \
    --ro-bind "$layer" /opt --bind "$work/tmp" /tmp \
    /opt/bin/clamd --config-file=/tmp/clamav/clamd.conf >"$work/clamd.log" 2>&1 </dev/null &
bwrap_pid=$!

python3 - "$host_socket" "$started_ns" "$START_TIMEOUT" "$bwrap_pid" "${CLAMAV_VERSION%%+*}" >"$work/results" <<'PY' || fail "$(tail -1 "$work/results" 2>/dev/null)"
import os, re, socket, struct, sys, time
path, started_ns, timeout, bwrap_pid, version = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def fail(msg):
    print(msg)
    sys.exit(1)

def ask(command, data=None):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    try:
        s.connect(path)
        s.sendall(command)
        if data is not None:
            for i in range(0, len(data), 8192):
                chunk = data[i:i + 8192]
                s.sendall(struct.pack(">I", len(chunk)) + chunk)
            s.sendall(struct.pack(">I", 0))
        answer = b""
        while not answer.endswith(b"\0"):
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        return answer.rstrip(b"\0").decode()
    finally:
        s.close()

deadline = time.monotonic() + timeout
while True:
    try:
        if ask(b"zPING\0") == "PONG":
            break
    except OSError:
        pass
    try:
        os.kill(bwrap_pid, 0)
        if open(f"/proc/{bwrap_pid}/stat").read().split(")")[1].split()[0] == "Z":
            raise ProcessLookupError
    except ProcessLookupError:
        fail("clamd exited during start-up")
    if time.monotonic() > deadline:
        fail(f"clamd did not answer PING within {timeout:.0f} s")
    time.sleep(0.01)
print(f"start_ms {(time.time_ns() - started_ns) / 1e6:.0f}")

v = ask(b"zVERSION\0")
if not v.startswith(f"ClamAV {version}"):
    fail(f"VERSION answered {v!r}, expected ClamAV {version}")
print(f"version {v}")

# The EICAR test file, from two halves (no sample anywhere in the repository).
eicar = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR" + b"-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
marker = b"PEC-CLAMAV-ONLY-TEST" + b"-MARKER-5d1e"
# The repo's names (infra/antivirus/clamav/); clamd appends .UNOFFICIAL to non-official ones.
cases = [
    ("EICAR", eicar, {"PEC.Test.EICAR", "PEC.Test.EICAR.Hash"}),
    ("EICAR inside other bytes", b"padding\n" * 512 + eicar + b"\n" + b"more\n" * 512, {"PEC.Test.EICAR"}),
    ("the ClamAV-only marker", b"Subject: test\r\n\r\n" + marker + b"\r\n", {"PEC.Test.ClamavOnlyMarker"}),
    ("clean bytes", b"Buongiorno, nessun virus qui.\r\n" * 4096, None),
]
for name, data, expected in cases:
    answer = ask(b"zINSTREAM\0", data)
    if expected is None:
        if answer != "stream: OK":
            fail(f"INSTREAM of {name}: {answer!r}, expected 'stream: OK'")
    else:
        m = re.fullmatch(r"stream: (\S+?)(?:\.UNOFFICIAL)?(?:\([^)]*\))? FOUND", answer)
        if not m or m.group(1) not in expected:
            fail(f"INSTREAM of {name}: {answer!r}, expected one of {sorted(expected)} FOUND")
    print(f"scan {name} ({len(data)} bytes): {answer}")
PY
start_ms="$(sed -n 's/^start_ms //p' "$work/results")"
sed -n 's/^version /  VERSION: /p; s/^scan /  INSTREAM /p' "$work/results"

# clamd's pid on this machine: bwrap -> bwrap (pid 1 of the namespace) -> clamd.
find_clamd() {
  local c
  for c in $(pgrep -P "$1" || true); do
    if [ "$(cat "/proc/$c/comm" 2>/dev/null)" = clamd ]; then echo "$c"; return 0; fi
    find_clamd "$c" && return 0
  done
  return 1
}
clamd_pid="$(find_clamd "$bwrap_pid")" || fail "no clamd process under bwrap $bwrap_pid"
hwm_kb="$(awk '/^VmHWM:/ {print $2}' "/proc/$clamd_pid/status")"
threads="$(awk '/^Threads:/ {print $2}' "/proc/$clamd_pid/status")"
cmdline="$(tr '\0' ' ' <"/proc/$clamd_pid/cmdline" | sed 's/ $//')"
# Its memory map names files as clamd sees them (inside the namespace).
grep -q " $interp\$" "/proc/$clamd_pid/maps" || fail "clamd's memory map has no $interp"
foreign="$(awk '$6 ~ /^\// {print $6}' "/proc/$clamd_pid/maps" | sort -u | grep -Ev '^(/opt/|/tmp/|/memfd:)' || true)"
[ -z "$foreign" ] || fail "clamd maps files from outside the layer: $foreign"
mapped="$(awk '$6 ~ /^\/opt\/lib\// {print $6}' "/proc/$clamd_pid/maps" | sort -u | wc -l)"
if grep -E '(ERROR|LibClamAV Error)' "$work/clamd.log" >/dev/null; then fail "errors in clamd's log"; fi

# Stop: SIGTERM to clamd itself (bubblewrap does not forward signals), as Lambda's shutdown does.
kill -TERM "$clamd_pid"
for _ in $(seq 1 100); do kill -0 "$bwrap_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$bwrap_pid" 2>/dev/null && fail "clamd did not stop within 10 s of SIGTERM"
wait "$bwrap_pid" && status=0 || status=$?
bwrap_pid=""
clamd_pid=""
[ "$status" = 0 ] || fail "clamd exited with $status after SIGTERM"
[ ! -e "$host_socket" ] || fail "clamd left its socket behind"

echo "  started ($cmdline) in ${start_ms} ms (exec to first PONG), peak RSS (VmHWM) $((hwm_kb / 1024)) MiB, $threads threads, with the test signatures only"
echo "  clamd mapped $mapped files of /opt/lib (the loader among them) and nothing from elsewhere; SIGTERM: stopped (exit 0, socket removed)"
echo "== freshclam in the empty root (only /opt and /tmp; uid $LAMBDA_UID; Lambda's environment), against a mirror on 127.0.0.1"
# The Talos-signed `test` database from ClamAV's source (v2: 0 signatures; v6: 14, EICAR among
# them), served like the official CDN serves daily/main/bytecode: <db>.cvd (the newest) and the
# signed <db>-N.cdiff patches. freshclam verifies all of it against keys compiled into libclamav,
# so nothing here is self-signed.
testdb="$(infra/antivirus/test-databases.sh)" || fail "infra/antivirus/test-databases.sh failed"
cvd_field() { # file field-number (1-based) of the 512-byte header ClamAV-VDB:time:version:sigs:...
  head -c 512 "$1" | tr -d '\0' | cut -d: -f"$2" | tr -d ' '
}
[ "$(cvd_field "$testdb/test-2.cvd" 3)" = 2 ] && [ "$(cvd_field "$testdb/test-6.cvd" 3)" = 6 ] \
  || fail "$testdb: test-2.cvd / test-6.cvd are not versions 2 / 6"
mirror="$work/mirror"
mkdir -p "$mirror"
cp "$testdb/test-6.cvd" "$mirror/test.cvd"
for n in 2 3 4 5 6; do cp "$testdb/test-$n.cdiff" "$mirror/"; done

# The mirror: freshclam reads the remote version from a `Range: bytes=0-511` GET of <db>.cvd
# (--no-dns), which python3's http.server ignores (it would send the whole file with 200, and
# ClamAV's docs say a mirror must support Range). So infra/antivirus/mirror.py: GET of the files in one
# directory (read at each request, so a step can swap them), a single "bytes=A-B" / "bytes=A-"
# range answered with 206, If-Modified-Since logged and ignored (freshclam then compares the
# versions itself). Bound to 127.0.0.1 on a port the kernel picks; killed by the EXIT trap.
python3 infra/antivirus/mirror.py "$mirror" "$work/mirror.port" "$work/mirror.log" >"$work/mirror.err" 2>&1 &
mirror_pid=$!
for _ in $(seq 1 100); do
  [ -s "$work/mirror.port" ] && break
  kill -0 "$mirror_pid" 2>/dev/null || fail "the mirror did not start: $(cat "$work/mirror.err")"
  sleep 0.1
done
port="$(cat "$work/mirror.port" 2>/dev/null)" || fail "the mirror did not report its port within 10 s"
echo "  mirror: http://127.0.0.1:$port (test.cvd = test-6.cvd, test-2..6.cdiff)"

# Runs freshclam as the definition updater will, with database directory /tmp/freshclam/<dir>;
# sets rc, ms (wall time) and writes $work/freshclam-<dir>.out (its --stdout log).
# The configuration is the updater's: DatabaseOwner only when running as root (then
# drop_privileges would look up the default user clamav), never here (uid $LAMBDA_UID).
# --share-net: the mirror listens on this machine's loopback, which a new network namespace
# would not have (in Lambda freshclam has the function's network anyway). Nothing from /etc:
# an IP-literal mirror needs no name lookup, and the rest (/etc/localtime, openssl.cnf,
# ld.so.preload) is only tried. fc_host, fc_env and fc_bwrap change the mirror's host name, add
# environment variables and bubblewrap arguments (step 4 only).
fc_host=127.0.0.1
fc_env=()
fc_bwrap=()
run_freshclam() { # dir
  local dir="$1" started
  {
    echo "DatabaseDirectory /tmp/freshclam/$dir"
    echo "DatabaseMirror http://$fc_host:$port"
    echo "DNSDatabaseInfo no"
    echo "ScriptedUpdates yes"
    echo "TestDatabases yes"
    echo "Bytecode yes"
    echo "LogTime yes"
    echo "ConnectTimeout 30"
    echo "ReceiveTimeout 600"
    [ "$LAMBDA_UID" = 0 ] && echo "DatabaseOwner root"
    true
  } >"$work/tmp/freshclam/$dir.conf"
  started="$(date +%s%N)"
  rc=0
  env -i LANG=en_US.UTF-8 TZ=:UTC PATH="$LAMBDA_PATH" LD_LIBRARY_PATH="$LAMBDA_LD_LIBRARY_PATH" \
    LC_ALL=C CURL_CA_BUNDLE=/opt/etc/ssl/certs/ca-certificates.crt "${fc_env[@]}" \
    "$bwrap" --unshare-all --share-net --unshare-user --uid "$LAMBDA_UID" --gid "$LAMBDA_GID" --die-with-parent \
      --ro-bind "$layer" /opt --bind "$work/tmp" /tmp "${fc_bwrap[@]}" \
      /opt/bin/freshclam --config-file="/tmp/freshclam/$dir.conf" --stdout --no-dns --update-db=test \
      --on-update-execute=EXIT_1 >"$work/freshclam-$dir.out" 2>&1 </dev/null || rc=$?
  ms=$((($(date +%s%N) - started) / 1000000))
}
fc_fail() { # dir message
  echo "---- freshclam's output" >&2
  tail -25 "$work/freshclam-$1.out" >&2
  echo "---- the mirror's log" >&2
  cat "$work/mirror.log" >&2 2>/dev/null || true
  fail "freshclam: $2"
}
mirror_mark() { if [ -f "$work/mirror.log" ]; then wc -l <"$work/mirror.log"; else echo 0; fi; }
mirror_since() { tail -n +"$(($1 + 1))" "$work/mirror.log" 2>/dev/null || true; }

# 1. v2 -> v6 through the cdiffs.
db="$work/tmp/freshclam/update"
mkdir -p "$db"
cp "$testdb/test-2.cvd" "$db/test.cvd"
mark="$(mirror_mark)"
run_freshclam update
[ "$rc" = 1 ] || fc_fail update "exit status $rc, expected 1 (updated, --on-update-execute=EXIT_1)"
requests="$(mirror_since "$mark")"
[ -f "$db/test.cld" ] && [ ! -e "$db/test.cvd" ] || fc_fail update "expected test.cld and no test.cvd, found: $(ls "$db" | tr '\n' ' ')"
[ "$(cvd_field "$db/test.cld" 1)" = ClamAV-VDB ] && [ "$(cvd_field "$db/test.cld" 3)" = 6 ] \
  || fc_fail update "test.cld's header is not version 6: $(head -c 512 "$db/test.cld" | tr -d '\0')"
[ "$(cvd_field "$db/test.cld" 4)" = 14 ] && [ "$(cvd_field "$db/test.cld" 9)" = 1624412045 ] \
  || fc_fail update "test.cld's header is not test-6's (14 signatures, stime 1624412045): $(head -c 512 "$db/test.cld" | tr -d '\0')"
grep -q '^GET /test.cvd range=bytes=0-511 .* -> 206 512$' <<<"$requests" || fc_fail update "no 206 Range GET of test.cvd's header"
for n in 3 4 5 6; do
  grep -q "^GET /test-$n.cdiff range=- .* -> 200 " <<<"$requests" || fc_fail update "test-$n.cdiff was not fetched"
done
if grep -q '^GET /test.cvd range=- ' <<<"$requests"; then fc_fail update "the whole test.cvd was fetched: the cdiffs were not used"; fi
if grep -q '^ERROR' "$work/freshclam-update.out"; then fc_fail update "errors in its output"; fi
[ -s "$db/freshclam.dat" ] || fc_fail update "no freshclam.dat in the database directory"
echo "  v2 -> v6: exit 1 (updated) in $ms ms; test.cld version 6, 14 signatures; mirror: $(grep -c . <<<"$requests") requests (the 512-byte header, test-3..6.cdiff); freshclam.dat written"
update_ms="$ms"

# 2. Again: up to date.
cp "$db/test.cld" "$work/test.cld.before"
mark="$(mirror_mark)"
run_freshclam update
[ "$rc" = 0 ] || fc_fail update "second run: exit status $rc, expected 0 (up to date)"
cmp -s "$db/test.cld" "$work/test.cld.before" || fc_fail update "second run: test.cld changed"
requests="$(mirror_since "$mark")"
[ "$(grep -c . <<<"$requests")" = 1 ] && grep -q '^GET /test.cvd range=bytes=0-511 ' <<<"$requests" \
  || fc_fail update "second run: expected one Range GET of test.cvd, the mirror saw: $requests"
echo "  again: exit 0 (up to date) in $ms ms; only the header was fetched"
uptodate_ms="$ms"

# 3. Tampered: one byte of test-4.cdiff and one of test.cvd (after the 512-byte header, so the
# advertised version is still 6) flipped. freshclam must reject the cdiff (RSA signature), fall
# back to the whole CVD, reject that too (MD5 + RSA signature in the header), and keep v2.
flip() { # file offset
  python3 -c 'import sys; p, o = sys.argv[1], int(sys.argv[2]); d = bytearray(open(p, "rb").read()); d[o] ^= 0x01; open(p, "wb").write(bytes(d))' "$1" "$2"
}
flip "$mirror/test-4.cdiff" "$(($(stat -c %s "$mirror/test-4.cdiff") / 2))"
flip "$mirror/test.cvd" "$((512 + ($(stat -c %s "$mirror/test.cvd") - 512) / 2))"
db="$work/tmp/freshclam/tampered"
mkdir -p "$db"
cp "$testdb/test-2.cvd" "$db/test.cvd"
mark="$(mirror_mark)"
run_freshclam tampered
[ "$rc" != 0 ] && [ "$rc" != 1 ] || fc_fail tampered "exit status $rc with a tampered cdiff and CVD (0: up to date, 1: updated)"
cmp -s "$db/test.cvd" "$testdb/test-2.cvd" || fc_fail tampered "the old test.cvd was changed"
[ ! -e "$db/test.cld" ] || fc_fail tampered "a test.cld was written"
[ -z "$(find "$db" -mindepth 1 -name 'tmp.*')" ] || fc_fail tampered "temporary files left in the database directory"
requests="$(mirror_since "$mark")"
grep -q '^GET /test-4.cdiff ' <<<"$requests" && grep -q '^GET /test.cvd range=- .* -> 200 ' <<<"$requests" \
  || fc_fail tampered "expected test-4.cdiff and then the whole test.cvd to be fetched, the mirror saw: $requests"
echo "  tampered test-4.cdiff and test.cvd: exit $rc in $ms ms ($(grep -c '^GET /test.cvd range=- ' <<<"$requests") attempts: cdiff refused, whole CVD refused); test.cvd v2 untouched, no test.cld"
echo "    freshclam said: $(grep -E '^(ERROR|WARNING)' "$work/freshclam-tampered.out" | sed 's/^\([A-Z]*\): [^>]*-> /\1: /' | LC_ALL=C sort -u | grep -v 'DNS Update Info' | tr '\n' '|' | sed 's/|$//; s/|/; /g')"
tampered_ms="$ms"

# 4. Not needed by the steps above, but how production works: the mirror by host name
# (database.clamav.net there), resolved by the layer's own libc (its files and dns NSS modules
# are built into Debian's libc.so.6) from the image's files. Lambda's image has /etc/hosts,
# /etc/nsswitch.conf and /etc/resolv.conf; here a synthetic /etc/hosts naming the mirror and an
# /etc/nsswitch.conf "hosts: files dns" are bound in, nothing else. With LD_DEBUG=libs the loader
# names every object it initialises, dlopened ones included (libgcc_s, an NSS module): all must
# come from /opt/lib.
cp "$testdb/test-6.cvd" "$mirror/test.cvd"
cp "$testdb/test-4.cdiff" "$mirror/test-4.cdiff"
printf '127.0.0.1 localhost\n127.0.0.1 clamav-mirror.test\n' >"$work/hosts"
printf 'hosts: files dns\n' >"$work/nsswitch.conf"
db="$work/tmp/freshclam/byname"
mkdir -p "$db"
cp "$testdb/test-2.cvd" "$db/test.cvd"
fc_host=clamav-mirror.test
fc_env=(LD_DEBUG=libs LD_DEBUG_OUTPUT=/tmp/freshclam/ld-debug)
fc_bwrap=(--ro-bind "$work/hosts" /etc/hosts --ro-bind "$work/nsswitch.conf" /etc/nsswitch.conf)
run_freshclam byname
fc_host=127.0.0.1
fc_env=()
fc_bwrap=()
[ "$rc" = 1 ] && [ "$(cvd_field "$db/test.cld" 3)" = 6 ] || fc_fail byname "through http://clamav-mirror.test:$port: exit status $rc, expected 1 and test.cld v6"
inits="$(cat "$work/tmp/freshclam"/ld-debug.* | sed -n 's/.*calling init: //p' | LC_ALL=C sort -u)"
[ -n "$inits" ] || fail "LD_DEBUG=libs wrote no 'calling init' lines"
foreign="$(grep -v '^/opt/lib/' <<<"$inits" || true)"
[ -z "$foreign" ] || fc_fail byname "objects loaded from outside /opt/lib: $foreign"
echo "  by host name (http://clamav-mirror.test:$port; only a synthetic /etc/hosts and /etc/nsswitch.conf added): exit 1 in $ms ms; the loader initialised $(grep -c . <<<"$inits") objects, all from /opt/lib"

kill "$mirror_pid" 2>/dev/null || true
wait "$mirror_pid" 2>/dev/null || true
mirror_pid=""
echo "  freshclam timings: update ${update_ms} ms, up to date ${uptodate_ms} ms, tampered ${tampered_ms} ms (MaxAttempts defaults to 3, 5 s apart)"
echo "clamav layer test: ok (clamd and freshclam $CLAMAV_VERSION, layer $(numfmt --to=iec "$CLAMAV_LAYER_BYTES")B zipped / $(numfmt --to=iec "$CLAMAV_LAYER_UNZIPPED_BYTES")B unzipped, clamd start ${start_ms} ms, VmHWM $((hwm_kb / 1024)) MiB; freshclam update ${update_ms} ms)"
