#!/usr/bin/env bash
# The mailbox-access benchmark (issue #15), on the local emulators (LocalStack S3 + DynamoDB
# Local, which are far slower than S3 and DynamoDB in AWS: the figures of our server are an upper
# bound, and the ratio to Dovecot says how much of a sync the store costs here, not in AWS):
#
#  1. listing a big INBOX: N messages (default 10,000; varied, realistic, 5–50 KB: plain text,
#     text + HTML, attachments, PEC envelopes) written through DynamoMailStore::append by
#     tests/benches/imap_fill.rs (the fill time is printed on its own); then, with Python's
#     imaplib over TLS, connect + LOGIN + SELECT INBOX + UID FETCH 1:* (UID FLAGS RFC822.SIZE)
#     against a release-built pec-runner hosting the edge service (pec_edge::serve over
#     DynamoMailStore, `--imap-port 0`),
#  2. the same against Dovecot (Debian's dovecot-imapd, infra/local/install.sh dovecot)
#     serving the SAME messages (same bytes, flags and dates) from a Maildir, with the same
#     Argon2id password hash, started by this script on 127.0.0.1 with a throwaway config in a
#     temporary directory; the two servers take turns, several runs, medians and the ratio;
#  3. one 30 MB message fetched from our server (BODY.PEEK[]): time, and the runner's resident
#     set before, at its peak (VmHWM after resetting it, and VmRSS sampled) and after;
#  4. 500 connections to our server logged in with INBOX selected, then in IDLE: the runner's
#     resident set before and with them, per connection, and the CPU their 1 s polls cost.
#
#   benches/imap.sh                  10,000 messages (about 3 minutes on 2 cores once built, of
#                                    which ~2.2 filling at ~75 messages/s)
#   benches/imap.sh --quick          1,000 messages, 3 runs (about a minute)
#   benches/imap.sh --messages N     N messages
#   benches/imap.sh --runs R         timed runs per server (default 5; median printed)
#   benches/imap.sh --connections C  idle connections for part 4 (default 500)
#   benches/imap.sh --concurrency P  appends in parallel while filling (default 4)
#
# Each of parts 3 and 4 gets a freshly started runner (so memory another part left in its
# allocator does not hide what this one needs); the runner runs only TimersFunction (swept once
# a day) besides the edge, so nothing else works in it. Our mailboxes use the production
# Argon2id cost where LOGIN is timed (Dovecot checks the very same hash), the fast test cost
# for the 500 logins of part 4.
# Uses the emulators of $PEC_STATE_DIR (default .local/stack of this clone) if they run, else
# starts them, and stops only what it started. Each run makes its own tenant and mailboxes
# (bench-imap-<time>), so runs can share a stack. Working files: $PEC_STATE_DIR/bench-imap/;
# Dovecot's files (the Maildir too) in a temporary directory removed at the end. Figures depend
# on whatever else runs on the machine. Not part of infra/test.sh: run it on demand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source infra/local/lib.sh

messages=10000
runs=5
connections=500
concurrency=4
big_bytes=30000000
hold_seconds=10
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) messages=1000; runs=3 ;;
    --messages) messages="${2:?--messages N}"; shift ;;
    --runs) runs="${2:?--runs R}"; shift ;;
    --connections) connections="${2:?--connections C}"; shift ;;
    --concurrency) concurrency="${2:?--concurrency P}"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
for v in messages runs connections concurrency; do
  [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || pec_die "--$v needs a positive number"
done

work="$PEC_STATE_DIR/bench-imap"
runner="${CARGO_TARGET_DIR:-target}/release/pec-runner"
pec="${CARGO_TARGET_DIR:-target}/release/pec"

started_stack=0
runner_pid=
dovecot_pid=
dove=
stop_runner() {
  if [ -n "$runner_pid" ] && kill -0 "$runner_pid" 2>/dev/null; then
    kill -TERM "$runner_pid" 2>/dev/null || true
    wait "$runner_pid" 2>/dev/null || true
  fi
  runner_pid=
}
stop_dovecot() {
  if [ -n "$dovecot_pid" ] && kill -0 "$dovecot_pid" 2>/dev/null; then
    kill -TERM "$dovecot_pid" 2>/dev/null || true
    wait "$dovecot_pid" 2>/dev/null || true
  fi
  dovecot_pid=
}
cleanup() {
  stop_runner
  stop_dovecot
  [ -z "$dove" ] || rm -rf "$dove"
  [ "$started_stack" = 1 ] && infra/local/stack.sh stop || true
}
trap cleanup EXIT

echo "== Setting up (release build, emulators, Dovecot, stack resources)"
infra/local/install.sh system python dynamodb mailclients dovecot
cargo build --release -q -p pec-runner -p pec-cli
cargo bench -q --no-run -p pec-integration --bench imap_fill 2>/dev/null \
  || cargo bench --no-run -p pec-integration --bench imap_fill
PY="$(pec_venv_dir)/bin/python"
DOVECOT="$(command -v dovecot || echo /usr/sbin/dovecot)"
if ! infra/local/stack.sh status >/dev/null 2>&1; then
  infra/local/stack.sh start
  started_stack=1
fi
infra/local/stack.sh bootstrap --stack-name pec-local >/dev/null
eval "$(infra/local/stack.sh env)"
rm -rf "$work" && mkdir -p "$work"
setup_seconds=$SECONDS
bench() { "$PY" benches/imap.py "$@"; }
fill() { cargo bench -q -p pec-integration --bench imap_fill -- "$@"; }

echo
echo "== Machine"
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)"
echo "  $(nproc) CPU(s): ${cpu:-unknown model}; memory $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "  LocalStack $LOCALSTACK_VERSION (S3) and DynamoDB Local stand in for S3 and DynamoDB: every"
echo "  store call is a local HTTP request to a Python or Java emulator, far slower than the AWS"
echo "  services. They, Dovecot, the clients and the pec-runner all share these $(nproc) CPU(s)."
echo "  $("$DOVECOT" --version | sed 's/^/Dovecot /;s/ (.*//'); our server: pec-runner (release) hosting pec_edge::serve."
echo "  load average before the run: $(cut -d' ' -f1-3 /proc/loadavg) (other work on the machine skews the figures)"

run="bench-imap-$(date -u +%Y%m%d%H%M%S)"
domain="${PEC_PROVIDER_DOMAIN:-pec.example.test}"
lista="lista-$run@$domain"
grande="grande-$run@$domain"
attese="attese-$run@$domain"
password="bench-$RANDOM$RANDOM-password"
echo
echo "== Tenant $run, three gold mailboxes"
"$pec" tenant add "$run" --name "IMAP benchmark $run" | sed 's/^/  /'
printf '%s\n' "$password" | "$pec" mailbox create "$lista" --tenant "$run" --plan gold --password-stdin | sed 's/^/  /'
for mbx in "$grande" "$attese"; do
  printf '%s\n' "$password" | "$pec" mailbox create "$mbx" --tenant "$run" --plan gold \
    --password-stdin --fast-hash | sed 's/^/  /'
done

dove="$(mktemp -d "${TMPDIR:-/tmp}/pec-bench-dovecot.XXXXXX")"
echo
echo "== Filling $lista with $messages messages (and the same into a Maildir for Dovecot)"
fill --address "$lista" --count "$messages" --concurrency "$concurrency" --seed 15 \
  --maildir "$dove/maildir" --json "$work/fill.json" 2> >(sed -u 's/^/  /' >&2) | sed 's/^/  /'
fill --address "$attese" --count 20 --seed 16 | sed 's/^/  /'
fill --address "$grande" --big "$big_bytes" --seed 17 --json "$work/fill-big.json" | sed 's/^/  /'
big_size="$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes"])' "$work/fill-big.json")"

start_runner() { # log file; sets runner_pid and imaps
  "$runner" --state-dir "$PEC_STATE_DIR" --only TimersFunction --timers-every 86400 \
    --imap-port 0 --imap-max-sessions $((connections + 16)) >"$1" 2>&1 &
  runner_pid=$!
  imaps=
  for _ in $(seq 1 300); do
    imaps="$(sed -n 's/^pec-runner: imaps \(127\.0\.0\.1:[0-9]*\)$/\1/p' "$1")"
    [ -n "$imaps" ] && break
    kill -0 "$runner_pid" 2>/dev/null || { tail -n 20 "$1" >&2; pec_die "pec-runner exited at start-up"; }
    sleep 0.2
  done
  [ -n "$imaps" ] || pec_die "pec-runner printed no IMAP address within 60 s (log $1)"
  sleep 1
}

start_dovecot() { # sets dovecot_port, dovecot_pid
  local user group uid gid run_as=()
  user="$(id -un)"; group="$(id -gn)"; uid="$(id -u)"; gid="$(id -g)"
  if [ "$uid" = 0 ]; then
    # Dovecot never gives mail access as root and refuses root login processes: as root, run
    # the whole instance as nobody (its rootless mode, as for any ordinary user).
    user=nobody; group="$(id -gn nobody)"; uid="$(id -u nobody)"; gid="$(id -g nobody)"
    run_as=(setpriv "--reuid=$uid" "--regid=$gid" --clear-groups)
  fi
  dovecot_port="$(pec_free_port)"
  mkdir -p "$dove/run" "$dove/state" "$dove/index" "$dove/home"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$dove/key.pem" -out "$dove/cert.pem" \
    -days 2 -subj /CN=localhost 2>/dev/null
  # The very hash our LOGIN checks (libsodium verifies the PHC string with its parameters).
  printf '%s:{ARGON2ID}%s\n' "$lista" "$(bench hash --address "$lista")" >"$dove/passwd"
  cat >"$dove/dovecot.conf" <<CONF
# Throwaway configuration of benches/imap.sh: one instance under $dove, IMAPS on loopback.
base_dir = $dove/run
state_dir = $dove/state
instance_name = pec-bench-imap-$dovecot_port
log_path = $dove/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <$dove/cert.pem
ssl_key = <$dove/key.pem
default_login_user = $user
default_internal_user = $user
default_internal_group = $group
first_valid_uid = $uid
last_valid_uid = $uid
first_valid_gid = $gid
last_valid_gid = $gid
mail_location = maildir:$dove/maildir:INDEX=$dove/index:CONTROL=$dove/index
auth_mechanisms = plain
passdb {
  driver = passwd-file
  args = username_format=%u $dove/passwd
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$dove/home
}
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $dovecot_port
    ssl = yes
  }
  chroot =
}
service anvil {
  chroot =
}
CONF
  [ "$(id -u)" != 0 ] || chown -R "$user:$group" "$dove"
  "${run_as[@]}" "$DOVECOT" -c "$dove/dovecot.conf" -F >"$dove/foreground.log" 2>&1 &
  dovecot_pid=$!
  for _ in $(seq 1 150); do
    ! pec_port_is_free "$dovecot_port" && return 0
    kill -0 "$dovecot_pid" 2>/dev/null || { cat "$dove/foreground.log" >&2; pec_die "dovecot exited at start-up"; }
    sleep 0.2
  done
  pec_die "dovecot did not listen on 127.0.0.1:$dovecot_port within 30 s"
}

echo
echo "== LOGIN + SELECT INBOX + UID FETCH 1:* (UID FLAGS RFC822.SIZE), $messages messages, $runs runs each"
start_runner "$work/runner-time.log"
start_dovecot
echo "  ours: $imaps (pec-runner pid $runner_pid); Dovecot: 127.0.0.1:$dovecot_port (pid $dovecot_pid)"
bench time --runs "$runs" --expect "$messages" --json "$work/time.json" \
  --server ours "$imaps" "$lista" "$password" \
  --server dovecot "127.0.0.1:$dovecot_port" "$lista" "$password" \
  || pec_die "the listing runs failed (runner log $work/runner-time.log, Dovecot log $dove/dovecot.log)"
stop_runner
stop_dovecot

echo
echo "== One $((big_bytes / 1000000)) MB message fetched from our server (fresh runner)"
start_runner "$work/runner-big.log"
bench big --address "$imaps" --user "$grande" --password "$password" --pid "$runner_pid" \
  --runs 3 --expect-bytes "$big_size" --json "$work/big.json" \
  || pec_die "fetching the big message failed (runner log $work/runner-big.log)"
stop_runner

echo
echo "== $connections idle connections to our server (fresh runner)"
start_runner "$work/runner-hold.log"
bench hold --address "$imaps" --user "$attese" --password "$password" --pid "$runner_pid" \
  --count "$connections" --hold "$hold_seconds" --json "$work/hold.json" \
  --cpu-pid pec-runner "$runner_pid" --cpu-pid "DynamoDB Local" "${PEC_DYNAMODB_PID:-$runner_pid}" \
  || pec_die "not every connection was held (runner log $work/runner-hold.log)"
stop_runner

echo
echo "== Summary (local emulators: LocalStack S3 and DynamoDB Local are much slower than AWS)"
bench summary --dir "$work" --messages "$messages" --runs "$runs"
echo
echo "Benchmark time: $((SECONDS / 60)) min $((SECONDS % 60)) s (set-up: build, emulators: $setup_seconds s)"
