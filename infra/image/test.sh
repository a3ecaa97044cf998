#!/usr/bin/env bash
# Tests the edge service's OCI image as built by infra/image/build.sh, on the local emulators
# (reused or started): the image's root file system runs under bubblewrap (this machine has no
# container engine) as the image's user, with only the environment ECS would give it, and real
# clients talk to it: `pec send` over SMTP submission (STARTTLS + AUTH), Python's imaplib over
# IMAPS (the submission is filed in Sent), POP3S greets. Also checked: the image's config (user
# 10001, entrypoint, ports), no shell in it, the root file system rebuilt from the same commit
# is identical, SIGTERM stops it cleanly.
#
#   infra/image/test.sh        (infra/test.sh runs it)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
source infra/local/lib.sh

out=".local/image"
infra/image/build.sh --out "$out"
source "$out/image.env"
py="$(pec_venv_dir)/bin/python"
work="$(mktemp -d)"
edge_pid=""
cleanup() {
  [ -n "$edge_pid" ] && kill "$edge_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "image test: $*" >&2; [ -f "$work/edge.log" ] && tail -20 "$work/edge.log" >&2; exit 1; }

echo "== the image's configuration"
mkdir -p "$work/oci" && tar -xf "$out/pec-edge.oci.tar" -C "$work/oci"
"$py" - "$work/oci" <<'EOF' || fail "image configuration"
import json, os, sys
root = sys.argv[1]
blob = lambda d: os.path.join(root, "blobs", *d.split(":"))
index = json.load(open(os.path.join(root, "index.json")))
manifest = json.load(open(blob(index["manifests"][0]["digest"])))
config = json.load(open(blob(manifest["config"]["digest"])))["config"]
assert config["User"] == "10001:10001", config["User"]
assert config["Entrypoint"] == ["/usr/local/bin/pec-edge"], config["Entrypoint"]
ports = {p.split("/")[0] for p in config["ExposedPorts"]}  # buildah 1.28 writes "2587", others "2587/tcp"
# Unprivileged ports: the image runs as 10001 without CAP_NET_BIND_SERVICE (the NLB maps 587 etc.).
assert ports == {"2587", "2993", "2143", "2995"}, config["ExposedPorts"]
assert len(manifest["layers"]) == 1, manifest["layers"]
print("  user %s, entrypoint %s, ports %s, %d layer" % (config["User"], config["Entrypoint"][0], " ".join(sorted(ports)), len(manifest["layers"])))
EOF

echo "== the root file system"
rootfs="$work/rootfs"
mkdir -p "$rootfs" && tar -xf "$out/rootfs.tar" -C "$rootfs" --exclude='./dev/*'
for sh in bin/sh bin/bash bin/dash usr/bin/sh usr/bin/bash usr/bin/dash; do
  [ ! -e "$rootfs/$sh" ] || fail "the image has a shell: /$sh"
done
[ -x "$rootfs/usr/local/bin/pec-edge" ] || fail "no /usr/local/bin/pec-edge"
grep -q '^pec:x:10001:10001:' "$rootfs/etc/passwd" || fail "no user pec (10001)"
echo "  no shell; pec-edge; user pec 10001; $(du -sh "$rootfs" | cut -f1)"
first="$IMAGE_ROOTFS_SHA256"
infra/image/build.sh --out "$work/again" >/dev/null 2>&1 || fail "the second build failed"
second="$(sed -n 's/^IMAGE_ROOTFS_SHA256=//p' "$work/again/image.env")"
[ "$first" = "$second" ] || fail "two builds of one commit differ: $first / $second"
echo "  rebuilt from the same commit: identical (sha256 $first)"

echo "== running it (bubblewrap, user 10001, ECS's environment only) on the local emulators"
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  trap 'cleanup; infra/local/stack.sh stop || true' EXIT
  # Run on its own (not after infra/test.sh's integration stage): the stack's resources too.
  infra/local/stack.sh bootstrap >/dev/null
fi
eval "$(infra/local/stack.sh env)"
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp="$(free_port)"; imaps="$(free_port)"; pop3s="$(free_port)"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
bwrap="$(command -v bwrap)"
env -i PATH=/usr/local/bin \
  AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL" AWS_ENDPOINT_URL_DYNAMODB="$AWS_ENDPOINT_URL_DYNAMODB" \
  AWS_REGION="$AWS_REGION" AWS_ACCESS_KEY_ID="$AWS_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$AWS_SECRET_ACCESS_KEY" \
  PEC_S3_FORCE_PATH_STYLE=1 RUST_LOG=info \
  PEC_PROVIDER_DOMAIN="$PEC_PROVIDER_DOMAIN" PEC_STATE_TABLE="$PEC_STATE_TABLE" PEC_LOG_TABLE="$PEC_LOG_TABLE" \
  PEC_RAW_BUCKET="$PEC_RAW_BUCKET" PEC_MAILBOX_BUCKET="$PEC_MAILBOX_BUCKET" \
  PEC_EDGE_SUBMISSION="127.0.0.1:$smtp" PEC_EDGE_IMAPS="127.0.0.1:$imaps" PEC_EDGE_POP3S="127.0.0.1:$pop3s" \
  PEC_EDGE_TLS_CERT="$(cat "$work/cert.pem")" PEC_EDGE_TLS_KEY="$(cat "$work/key.pem")" \
  "$bwrap" --unshare-user --uid 10001 --gid 10001 --unshare-pid --unshare-ipc --die-with-parent \
    --ro-bind "$rootfs" / --dev /dev --proc /proc --tmpfs /tmp \
    /usr/local/bin/pec-edge >"$work/edge.log" 2>&1 &
edge_pid=$!
for _ in $(seq 1 100); do
  grep -q 'POP3 server listening' "$work/edge.log" 2>/dev/null && break
  kill -0 "$edge_pid" 2>/dev/null || fail "pec-edge exited"
  sleep 0.1
done
grep -q 'POP3 server listening' "$work/edge.log" || fail "pec-edge did not start listening"
inner="$(pgrep -n -x -f /usr/local/bin/pec-edge || true)"
[ -n "$inner" ] || fail "no pec-edge process"
uid_in_ns="$(awk '/^Uid:/ {print $2}' "/proc/$inner/status")"
echo "  pec-edge listening: smtp $smtp, imaps $imaps, pop3s $pop3s (pid $inner; uid 10001 in its user namespace, $uid_in_ns on the host)"

pec_build_binaries
pec=target/debug/pec
run="img$(date +%H%M%S)$$"
user="mario.$run@$PEC_PROVIDER_DOMAIN"
password="image-test-$run"
$pec tenant add "t-$run" --name "Image test" >/dev/null
echo "$password" | $pec mailbox create "$user" --tenant "t-$run" --plan base --password-stdin --fast-hash >/dev/null
id="$(echo "$password" | $pec send --server "127.0.0.1:$smtp" --ca "$work/cert.pem" --user "$user" --password-stdin \
  --to "$user" --subject "Dal contenitore" --text "Inviato attraverso l'immagine.")" || fail "pec send through the image"
echo "  SMTP submission through the image: $id"
listing="$("$py" infra/local/imap_peek.py --port "$imaps" --ca "$work/cert.pem" --user "$user" --password "$password" --folders Sent --json)" \
  || fail "IMAPS through the image"
echo "$listing" | "$py" -c '
import json, sys
d = json.load(sys.stdin)
sent = d["folders"][0]["messages"]
assert [m["subject"] for m in sent] == ["Dal contenitore"], sent
print("  IMAPS through the image: Sent holds %r (%d bytes)" % (sent[0]["subject"], sent[0]["size"]))
' || fail "the submission is not in Sent"
greeting="$("$py" -c '
import poplib, ssl, sys
c = ssl.create_default_context(cafile=sys.argv[2]); c.check_hostname = False
p = poplib.POP3_SSL("127.0.0.1", int(sys.argv[1]), context=c, timeout=10)
print(p.getwelcome().decode()); p.quit()' "$pop3s" "$work/cert.pem")" || fail "POP3S through the image"
echo "  POP3S through the image: $greeting"

# SIGTERM to pec-edge itself (as ECS's stop does; bubblewrap does not forward signals).
kill -TERM "$inner"
for _ in $(seq 1 150); do kill -0 "$edge_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$edge_pid" 2>/dev/null; then fail "pec-edge did not stop within 15 s of SIGTERM"; fi
wait "$edge_pid" && status=0 || status=$?
edge_pid=""
[ "$status" = 0 ] || fail "pec-edge exited with $status after SIGTERM"
grep -q 'edge: stopped' "$work/edge.log" || fail "pec-edge did not drain"
echo "  SIGTERM: drained and stopped (exit 0)"
echo "image test: ok ($IMAGE_TAG $IMAGE_DIGEST)"
