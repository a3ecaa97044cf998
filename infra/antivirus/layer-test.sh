#!/usr/bin/env bash
# Tests the ClamAV Lambda layer built by infra/antivirus/layer.sh (issue #20 item 4): it must be
# self-contained, so clamd runs under bubblewrap in an EMPTY root: only the layer, read-only at
# /opt, and a work directory at /tmp. No /usr, /lib, /etc, no shell, no /proc, no /dev (clamd
# needs none of them: they are left out so that a dependency on them would show here), all
# namespaces unshared, a non-root uid as in Lambda, and Lambda's environment (its LD_LIBRARY_PATH
# included). clamd is started as the scan function starts it (shared/pec-host/src/clamd_launch.rs:
# `/opt/bin/clamd --config-file=...`, the configuration text taken from that file) with the
# project's test signatures (infra/antivirus/clamav/), and must answer PING and VERSION, find
# EICAR (generated here, never committed) and the ClamAV-only marker under the repo's signature
# names, and pass clean bytes. Also checked: the layer's ELF headers (interpreter
# /opt/lib/ld-linux-x86-64.so.2, DT_RPATH /opt/lib, no DT_RUNPATH), the bundled loader's
# --list in the empty root resolves everything under /opt and names exactly the libraries in
# lib/, the same with Lambda's LD_LIBRARY_PATH on a full Debian system (/ visible, the layer over
# /opt: nothing may come from /lib), and a second build is identical byte for byte.
# Printed: clamd's start time (exec to first PONG) and peak RSS (VmHWM) with the test signatures.
#
#   infra/antivirus/layer-test.sh        (builds the layer first: cached, about 20 s when warm)
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
cleanup() {
  [ -n "$clamd_pid" ] && kill -KILL "$clamd_pid" 2>/dev/null || true
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
echo "  clamd $CLAMAV_VERSION; zip $CLAMAV_LAYER_BYTES bytes ($(numfmt --to=iec "$CLAMAV_LAYER_BYTES")B), unzipped $CLAMAV_LAYER_UNZIPPED_BYTES bytes ($(numfmt --to=iec "$CLAMAV_LAYER_UNZIPPED_BYTES")B), sha256 $CLAMAV_LAYER_SHA256"
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

echo "== its files and ELF headers"
[ "$(cd "$layer" && ls)" = "$(printf 'bin\nlib\nshare')" ] || fail "the layer holds more than bin/ lib/ share/: $(cd "$layer" && ls | tr '\n' ' ')"
[ "$(cd "$layer/bin" && ls)" = clamd ] || fail "bin/ holds more than clamd: $(ls "$layer/bin" | tr '\n' ' ')"
[ -z "$(find "$layer" -type l)" ] || fail "symlinks in the layer"
[ "$(head -c 4 "$layer/bin/clamd" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "bin/clamd is not an ELF file (a script?)"
[ -x "$layer/bin/clamd" ] && [ -x "$layer/lib/$loader" ] || fail "bin/clamd or the loader is not executable"
got_interp="$(readelf -lW "$layer/bin/clamd" | sed -n 's/.*\[Requesting program interpreter: \(.*\)\]/\1/p')"
[ "$got_interp" = "$interp" ] || fail "bin/clamd's interpreter is '$got_interp', not $interp"
for f in "$layer/bin/clamd" "$layer"/lib/*; do
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
for pkg in clamav-daemon libclamav12 libc6; do
  [ -s "$layer/share/licenses/$pkg/copyright" ] || fail "no licence file for $pkg"
done
echo "  bin/clamd: ELF, interpreter $interp, RPATH /opt/lib; $(ls "$layer/lib" | wc -l) libraries, RPATH /opt/lib (ld.so, libc.so.6: Debian's, untouched); no RUNPATH; $(ls "$layer/share/licenses" | wc -l) licence files"

# The loader's view: "soname => path" lines; every path must be under /opt.
check_list() { # label listing-file
  local bad
  grep -q 'not found' "$2" && fail "$1: $(grep 'not found' "$2" | tr -s ' \t' ' ')"
  bad="$(grep -v 'linux-vdso' "$2" | sed -n 's/.*=> \([^ ]*\) .*/\1/p; s/^[[:space:]]*\(\/[^ ]*\) (0x.*/\1/p' | grep -v '^/opt/lib/' || true)"
  [ -z "$bad" ] || fail "$1: resolved outside /opt: $bad"
}
echo "== the bundled loader's --list in the empty root"
"$bwrap" --unshare-all --die-with-parent --ro-bind "$layer" /opt \
  "$interp" --list /opt/bin/clamd >"$work/list" 2>&1 || { cat "$work/list" >&2; fail "ld.so --list failed in the empty root"; }
check_list "empty root" "$work/list"
listed="$( { sed -n 's/.*=> \/opt\/lib\/\([^ ]*\) .*/\1/p' "$work/list"; echo "$loader"; echo libgcc_s.so.1; } | LC_ALL=C sort -u)"
[ "$listed" = "$(ls "$layer/lib" | LC_ALL=C sort)" ] \
  || fail "lib/ is not exactly what the loader maps (+ libgcc_s.so.1): $(diff <(echo "$listed") <(ls "$layer/lib" | LC_ALL=C sort) | grep '^[<>]' | tr '\n' ' ')"
echo "  $(grep -c '=> /opt/lib/' "$work/list") libraries + the loader, all from /opt/lib; lib/ holds exactly those (libgcc_s.so.1, which glibc dlopens, is allowed besides)"

echo "== the same with Lambda's LD_LIBRARY_PATH on a full Debian system (/ visible, the layer over /opt)"
env -i LD_LIBRARY_PATH="/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu:$LAMBDA_LD_LIBRARY_PATH" \
  "$bwrap" --unshare-all --die-with-parent --ro-bind / / --ro-bind "$layer" /opt \
  "$interp" --list /opt/bin/clamd >"$work/list-full" 2>&1 || { cat "$work/list-full" >&2; fail "ld.so --list failed on the full system"; }
check_list "full system with LD_LIBRARY_PATH" "$work/list-full"
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
echo "clamav layer test: ok (clamd $CLAMAV_VERSION, layer $(numfmt --to=iec "$CLAMAV_LAYER_BYTES")B zipped / $(numfmt --to=iec "$CLAMAV_LAYER_UNZIPPED_BYTES")B unzipped, start ${start_ms} ms, VmHWM $((hwm_kb / 1024)) MiB)"
