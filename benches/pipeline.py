"""Helpers of benches/pipeline.sh (run with the project's venv Python: it needs boto3).

Every subcommand reads the SDK environment of the local stack (eval "$(infra/local/stack.sh env)"):
AWS_ENDPOINT_URL (LocalStack), AWS_ENDPOINT_URL_DYNAMODB (DynamoDB Local), PEC_STATE_TABLE,
PEC_RAW_BUCKET, PEC_MAILBOX_BUCKET, PEC_PROVIDER_DOMAIN.

  send      submit N messages over SMTP (STARTTLS + AUTH PLAIN), C connections in parallel
  wait      wait until the sender holds N delivery receipts (progress on stderr)
  report    latency percentiles and throughput from the state table
  big       write one ~30 MB submission (.eml then .json) into the raw bucket, as the gateway does
  rss       run a command until its function's queues are empty; print its peak RSS
  queues    print the queues that hold messages; the dead-letter total on stdout
  check-big say whether the big message reached the recipient and its receipt the sender
  cpu       CPU time of processes (a snapshot, or what they used since an earlier snapshot)
"""

import argparse
import base64
import datetime as dt
import json
import os
import random
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import boto3
from botocore.config import Config

LIMIT_BYTES = 30 * 1024 * 1024  # pec-core policy::DEFAULT_MAX_TOTAL_BYTES (size x recipients)


def env(name):
    value = os.environ.get(name)
    if not value:
        sys.exit(f"pipeline.py: {name} is not set (eval \"$(infra/local/stack.sh env)\")")
    return value


def ddb():
    return boto3.client("dynamodb", endpoint_url=env("AWS_ENDPOINT_URL_DYNAMODB"),
                        config=Config(retries={"max_attempts": 10, "mode": "standard"}))


def aws(service):
    return boto3.client(service, endpoint_url=env("AWS_ENDPOINT_URL"),
                        config=Config(retries={"max_attempts": 10, "mode": "standard"},
                                      s3={"addressing_style": "path"}))


def parse_time(value):
    # chrono writes RFC 3339 with up to 9 fractional digits; Python 3.11 truncates past 6.
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def mailbox_items(client, address):
    """Every item of a mailbox (kind, stored_at, evidence_key, size...)."""
    items, start = [], None
    while True:
        kwargs = dict(TableName=env("PEC_STATE_TABLE"),
                      KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                      ExpressionAttributeValues={":pk": {"S": f"MBX#{address.lower()}"},
                                                 ":p": {"S": "ITEM#"}})
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.query(**kwargs)
        items += [json.loads(i["doc"]["S"]) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            return items


def count_kind(client, address, kind):
    """How many items of one kind a mailbox holds (the filter runs in DynamoDB Local)."""
    total, start = 0, None
    while True:
        kwargs = dict(TableName=env("PEC_STATE_TABLE"), Select="COUNT",
                      KeyConditionExpression="pk = :pk AND begins_with(sk, :p)",
                      FilterExpression="contains(doc, :k)",
                      ExpressionAttributeValues={":pk": {"S": f"MBX#{address.lower()}"},
                                                 ":p": {"S": "ITEM#"},
                                                 ":k": {"S": f'"kind":"{kind}"'}})
        if start:
            kwargs["ExclusiveStartKey"] = start
        page = client.query(**kwargs)
        total += page["Count"]
        start = page.get("LastEvaluatedKey")
        if not start:
            return total


def submission_of(evidence_key):
    # signed/msg/<submission id>/...
    parts = evidence_key.split("/")
    return parts[2] if len(parts) > 2 and parts[:2] == ["signed", "msg"] else None


def messages(client, ids):
    """received_at of each submission (state table items MSG#<id> / MSG)."""
    out, ids = {}, list(ids)
    for i in range(0, len(ids), 100):
        keys = [{"pk": {"S": f"MSG#{m}"}, "sk": {"S": "MSG"}} for m in ids[i:i + 100]]
        request = {env("PEC_STATE_TABLE"): {"Keys": keys}}
        while request:
            page = client.batch_get_item(RequestItems=request)
            for item in page["Responses"].get(env("PEC_STATE_TABLE"), []):
                doc = json.loads(item["doc"]["S"])
                out[doc["id"]] = doc
            request = page.get("UnprocessedKeys") or None
    return out


# ---------------------------------------------------------------------------------------- send

def cmd_send(a):
    host, port = a.server.rsplit(":", 1)
    context = ssl.create_default_context(cafile=a.ca)
    lock = threading.Lock()
    next_index = [0]
    errors, done = [], [0]
    start = time.time()

    def take():
        with lock:
            if next_index[0] >= a.count:
                return None
            next_index[0] += 1
            return next_index[0] - 1

    def connect():
        s = smtplib.SMTP(host, int(port), local_hostname="bench.localhost", timeout=120)
        s.ehlo()
        s.starttls(context=context)  # server name 127.0.0.1: the dev certificate lists it
        s.ehlo()
        s.login(a.user, a.password)
        return s

    def worker():
        s, sent_here = None, 0
        while True:
            i = take()
            if i is None:
                break
            if a.rate:  # message i leaves no earlier than start + i / rate
                delay = start + i / a.rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            m = EmailMessage()
            m["From"] = a.user
            m["To"] = a.to
            m["Subject"] = f"{a.tag} message {i + 1} of {a.count}"
            m["Date"] = formatdate(localtime=False)
            m["Message-ID"] = make_msgid(domain="bench.localhost")
            m.set_content(f"Benchmark message {i + 1}.\n" + "Lorem ipsum dolor sit amet. " * 20)
            for attempt in range(3):
                try:
                    # The gateway closes a session after max_commands (1000): reconnect in time.
                    if s is None or sent_here >= 100:
                        if s is not None:
                            s.quit()
                        s, sent_here = connect(), 0
                    s.send_message(m, from_addr=a.user, to_addrs=[a.to])
                    sent_here += 1
                    with lock:
                        done[0] += 1
                    break
                except (smtplib.SMTPException, OSError) as e:
                    s = None
                    if attempt == 2:
                        with lock:
                            errors.append(f"message {i + 1}: {e}")
        if s is not None:
            try:
                s.quit()
            except (smtplib.SMTPException, OSError):
                pass

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    end = time.time()
    json.dump({"started": start, "finished": end, "sent": done[0], "errors": errors},
              open(a.out, "w"))
    for e in errors[:5]:
        print(f"pipeline.py send: {e}", file=sys.stderr)
    print(f"submitted {done[0]} of {a.count} messages over SMTP in {end - start:.1f} s "
          f"({done[0] / (end - start):.1f}/s, {a.concurrency} connections)", file=sys.stderr)
    sys.exit(0 if done[0] == a.count else 1)


# ---------------------------------------------------------------------------------------- wait

def cmd_wait(a):
    client = ddb()
    started = time.time()
    deadline = started + a.timeout
    shown, shown_at = -1, 0.0
    while True:
        n = count_kind(client, a.sender, "avvenuta-consegna")
        # Progress about every 30 s (and at the end), not at every change.
        if n >= a.count or (n != shown and time.time() - shown_at >= 30):
            shown, shown_at = n, time.time()
            print(f"  {time.time() - started:5.0f} s: {n}/{a.count} delivery receipts", file=sys.stderr)
        if n >= a.count:
            return
        if time.time() > deadline:
            sys.exit(f"pipeline.py wait: only {n} of {a.count} delivery receipts after {a.timeout} s")
        time.sleep(a.poll)


# -------------------------------------------------------------------------------------- report

def percentile(values, p):
    """Nearest-rank percentile."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def cmd_report(a):
    client = ddb()
    sent = json.load(open(a.send_json))
    acc, dc = {}, {}
    for item in mailbox_items(client, a.sender):
        mid = submission_of(item["evidence_key"])
        if mid is None:
            continue
        if item["kind"] == "accettazione":
            acc[mid] = parse_time(item["stored_at"])
        elif item["kind"] == "avvenuta-consegna":
            dc[mid] = parse_time(item["stored_at"])
    busta = {}
    for item in mailbox_items(client, a.recipient):
        mid = submission_of(item["evidence_key"])
        if mid and item["kind"] == "posta-certificata":
            busta[mid] = parse_time(item["stored_at"])
    records = messages(client, set(acc) | set(dc))
    received = {m: parse_time(r["received_at"]) for m, r in records.items()}
    lat = lambda d: [(d[m] - received[m]).total_seconds() for m in d if m in received]
    acc_l, busta_l, dc_l = lat(acc), lat(busta), lat(dc)
    first = min(received.values())
    last = max(dc.values())
    span = (last - first).total_seconds()
    submit = sent["finished"] - sent["started"]
    rows = [
        ("messages submitted (SMTP)", f"{sent['sent']}"),
        ("acceptance receipts (sender)", f"{len(acc)}"),
        ("envelopes delivered (recipient)", f"{len(busta)}"),
        ("delivery receipts (sender)", f"{len(dc)}"),
        ("submission time (client, SMTP)", f"{submit:.1f} s ({sent['sent'] / submit:.1f} msg/s)"),
        ("wall time, first submission -> last delivery receipt", f"{span:.1f} s"),
        ("throughput (messages / that wall time)", f"{len(dc) / span:.2f} msg/s"),
    ]
    width = max(len(r[0]) for r in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    print()
    print(f"  {'latency from received_at (gateway, end of DATA) to':<44} {'p50':>9} {'p99':>9} {'max':>9}")
    for name, values in (("acceptance receipt stored (sender)", acc_l),
                         ("envelope stored (recipient)", busta_l),
                         ("delivery receipt stored (sender)", dc_l)):
        if values:
            print(f"  {name:<44} {percentile(values, 50):8.2f}s {percentile(values, 99):8.2f}s "
                  f"{max(values):8.2f}s")
    if a.runner_log:
        activity(a.runner_log)
    ok = len(dc) >= a.count and len(acc) >= a.count
    sys.exit(0 if ok else 1)


def activity(path):
    """Per function: records handled and the span from its first to its last batch (the runner's
    JSON log lines `batch handled`); skipped if the log has none."""
    seen = {}
    for line in open(path, errors="replace"):
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
            f = d.get("fields", {})
            if f.get("message") != "batch handled":
                continue
            t = parse_time(d["timestamp"])
            fn, n = f["function"], int(f["received"])
        except (ValueError, KeyError, TypeError):
            continue
        first, last, batches, records, failed = seen.get(fn, (t, t, 0, 0, 0))
        seen[fn] = (min(first, t), max(last, t), batches + 1, records + n,
                    failed + int(f.get("failed", 0) or 0))
    if not seen:
        return
    print()
    print(f"  {'runner (one poller per queue, records one at a time)':<52} {'records':>8} {'batches':>8} "
          f"{'failed':>7} {'active span':>12}")
    for fn, (first, last, batches, records, failed) in sorted(seen.items()):
        print(f"  {fn:<52} {records:>8} {batches:>8} {failed:>7} {(last - first).total_seconds():>11.1f}s")


# ----------------------------------------------------------------------------------------- big

def cmd_big(a):
    """One submission of about `--bytes` bytes, mostly base64 attachments, as the gateway would
    write it: submitted/<id>.eml, then submitted/<id>.json (the envelope triggers ingress)."""
    if a.bytes > LIMIT_BYTES:
        sys.exit(f"pipeline.py big: {a.bytes} bytes is over the PEC limit of {LIMIT_BYTES} "
                 "(size x recipients): the access point would refuse it")
    now = dt.datetime.now(dt.timezone.utc)
    mid = f"bench-big-{now.strftime('%Y%m%dT%H%M%S')}-{random.randrange(16**6):06x}"
    boundary = f"=_bench_{random.randrange(16**12):012x}"
    head = (f"From: {a.user}\r\nTo: {a.to}\r\nSubject: {a.tag} 30 MB message\r\n"
            f"Date: {formatdate(localtime=False)}\r\nMessage-ID: {make_msgid(domain='bench.localhost')}\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n"
            f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
            f"Three attachments, about {a.bytes / 1e6:.0f} MB in all once base64-encoded.\r\n").encode()
    tail = f"--{boundary}--\r\n".encode()
    parts, n = [], 3
    part_head = lambda k: (f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                           f"Content-Transfer-Encoding: base64\r\n"
                           f"Content-Disposition: attachment; filename=\"allegato-{k}.bin\"\r\n\r\n").encode()
    budget = a.bytes - len(head) - len(tail) - sum(len(part_head(k)) for k in range(1, n + 1))
    per_part = budget // n  # encoded bytes per part: 78 per 57 raw bytes (76 chars + CRLF)
    rng = random.Random(20261123)
    for k in range(1, n + 1):
        raw = rng.randbytes(per_part // 78 * 57)
        parts.append(part_head(k) + base64.encodebytes(raw).replace(b"\n", b"\r\n"))
    eml = head + b"".join(parts) + tail
    envelope = {"version": 1, "id": mid, "received_at": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "user": a.user, "tenant": a.tenant, "reverse_path": a.user,
                "recipients": [a.to], "client_ip": "127.0.0.1", "tls": True}
    s3 = aws("s3")
    bucket = env("PEC_RAW_BUCKET")
    s3.put_object(Bucket=bucket, Key=f"submitted/{mid}.eml", Body=eml, ContentType="message/rfc822")
    s3.put_object(Bucket=bucket, Key=f"submitted/{mid}.json", Body=json.dumps(envelope, indent=2),
                  ContentType="application/json")
    print(f"pipeline.py big: s3://{bucket}/submitted/{mid}.eml ({len(eml)} bytes, "
          f"{sum(len(p) for p in parts)} of base64 attachments)", file=sys.stderr)
    print(mid)


# ----------------------------------------------------------------------------------------- rss

def queue_depth(sqs, url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed"])["Attributes"]
    return sum(int(v) for v in attrs.values())


def function_queues(state_dir, function):
    resources = json.load(open(os.path.join(state_dir, "pec-local.resources.json")))
    return [q["queue_url"] for q in resources["functions"][function]["queues"]]


def run_measured(cmd, log):
    """Runs cmd; returns (exit code, peak RSS in KiB, seconds). The peak is the kernel's
    ru_maxrss of exactly that child, from wait4(2): the high-water mark of its resident set
    (VmHWM), whatever its threads did, read after it exited, with no sampling to miss a peak."""
    t0 = time.time()
    with open(log, "ab") as out:
        p = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss, time.time() - t0


def cmd_rss(a):
    """Runs the command (a runner with --only FUNCTION --until-idle S) and, while the function's
    queues still hold messages after it stopped, runs it again (a runner may stop while later
    messages are still arriving). Prints: runs, peak KiB (max over runs), seconds."""
    sqs = aws("sqs")
    urls = function_queues(a.state_dir, a.function)
    peak, runs, seconds = 0, 0, 0.0
    while True:
        code, kib, secs = run_measured(a.command, a.log)
        runs, peak, seconds = runs + 1, max(peak, kib), seconds + secs
        if code != 0:
            sys.exit(f"pipeline.py rss: {' '.join(a.command)} exited with {code} (log {a.log})")
        time.sleep(1)  # let S3 notifications of the last writes reach the queues
        if a.once or all(queue_depth(sqs, u) == 0 for u in urls):
            break
        if runs >= 5:
            sys.exit(f"pipeline.py rss: {a.function}'s queues still hold messages after {runs} runs")
    print(f"{runs} {peak} {seconds:.1f}")


def cmd_queues(a):
    """Prints (stderr) every function queue and dead-letter queue that holds messages, and
    (stdout) the number of messages in the dead-letter queues. With --fail-if-busy, exits 1 if a
    function queue is not empty."""
    sqs = aws("sqs")
    resources = json.load(open(os.path.join(a.state_dir, "pec-local.resources.json")))
    work = sorted({q["queue_url"] for f in resources["functions"].values() for q in f["queues"]})
    dlqs = sorted(v for k, v in resources["outputs"].items() if k.endswith("DeadLetterQueueUrl"))
    busy = dead = 0
    for u in work + dlqs:
        n = queue_depth(sqs, u)
        if u in dlqs:
            dead += n
        else:
            busy += n
        if n:
            print(f"  queue {u.rsplit('/', 1)[1]}: {n} message(s)", file=sys.stderr)
    print(dead)
    sys.exit(1 if busy and a.fail_if_busy else 0)


# ------------------------------------------------------------------------------------ check-big

def cmd_check_big(a):
    client = ddb()
    s3 = aws("s3")
    record = messages(client, [a.id]).get(a.id)
    busta = [i for i in mailbox_items(client, a.recipient)
             if submission_of(i["evidence_key"]) == a.id and i["kind"] == "posta-certificata"]
    sender = [i for i in mailbox_items(client, a.sender) if submission_of(i["evidence_key"]) == a.id]
    receipt = [i for i in sender if i["kind"] == "avvenuta-consegna"]
    acc = [i for i in sender if i["kind"] == "accettazione"]
    ok = bool(record and busta and receipt and acc)
    print(f"  submission {a.id}: state {record['state'] if record else 'NO RECORD'}")
    print(f"  acceptance receipt in the sender's mailbox:  "
          + (f"yes, {acc[0]['size']:,} bytes" if acc else "NO"))
    print(f"  transport envelope in the recipient's mailbox: "
          + (f"yes, {busta[0]['size']:,} bytes" if busta else "NO"))
    if receipt:
        obj = s3.get_object(Bucket=env("PEC_MAILBOX_BUCKET"), Key=receipt[0]["object_key"])["Body"].read()
        head = obj.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].decode("utf-8", "replace")
        form = next((line.split(":", 1)[1].strip() for line in head.splitlines()
                     if line.lower().startswith("x-tiporicevuta:")), "completa (no X-TipoRicevuta)")
        has_original = b'name="postacert.eml"' in obj
        print(f"  delivery receipt in the sender's mailbox:     yes, {receipt[0]['size']:,} bytes, "
              f"X-TipoRicevuta {form}, " + ("contains the original (postacert.eml)" if has_original
                                            else "without the original"))
    else:
        print("  delivery receipt in the sender's mailbox:     NO")
    sys.exit(0 if ok else 1)


# ----------------------------------------------------------------------------------------- cpu

def ticks_of(pid, session):
    """utime + stime (+ waited-for children) of one process, or of every process of its session."""
    def stat(path):
        text = open(path).read()
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        return fields  # fields[0] is state (field 3 of proc(5))
    total = 0
    if not session:
        f = stat(f"/proc/{pid}/stat")
        return sum(int(x) for x in f[11:15])
    sid = stat(f"/proc/{pid}/stat")[3]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                f = stat(f"/proc/{entry}/stat")
            except (OSError, ValueError):
                continue
            if f[3] == sid:
                total += sum(int(x) for x in f[11:15])
    return total


def cmd_cpu(a):
    """Snapshot: `cpu LABEL=PID ...` (PID: that process; @PID: its whole session) prints JSON.
    With --since FILE: prints the CPU seconds each used since that snapshot, and the share of
    the elapsed time (100 % = one core busy)."""
    hz = os.sysconf("SC_CLK_TCK")
    now = {"at": time.time(), "cpu": {}}
    for spec in a.processes:
        label, pid = spec.split("=", 1)
        session = pid.startswith("@")
        try:
            now["cpu"][label] = ticks_of(pid.lstrip("@"), session) / hz
        except (OSError, ValueError, IndexError):
            now["cpu"][label] = None
    if not a.since:
        print(json.dumps(now))
        return
    before = json.load(open(a.since))
    wall = now["at"] - before["at"]
    print(f"  {'CPU time during the run (' + format(wall, '.0f') + ' s, ' + str(os.cpu_count()) + ' CPUs)':<52} "
          f"{'CPU s':>8} {'of one core':>12}")
    for label, value in now["cpu"].items():
        prev = before["cpu"].get(label)
        if value is None or prev is None:
            continue
        used = value - prev
        print(f"  {label:<52} {used:8.1f} {100 * used / wall:11.0f}%")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("send")
    s.add_argument("--server", required=True)
    s.add_argument("--ca", required=True)
    s.add_argument("--user", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--to", required=True)
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--concurrency", type=int, default=8)
    s.add_argument("--rate", type=float, default=0, help="messages/s (0: as fast as possible)")
    s.add_argument("--tag", default="pipeline bench")
    s.add_argument("--out", required=True)
    s.set_defaults(f=cmd_send)
    w = sub.add_parser("wait")
    w.add_argument("--sender", required=True)
    w.add_argument("--count", type=int, required=True)
    w.add_argument("--timeout", type=float, default=900)
    w.add_argument("--poll", type=float, default=3)
    w.set_defaults(f=cmd_wait)
    r = sub.add_parser("report")
    r.add_argument("--sender", required=True)
    r.add_argument("--recipient", required=True)
    r.add_argument("--count", type=int, required=True)
    r.add_argument("--send-json", required=True)
    r.add_argument("--runner-log")
    r.set_defaults(f=cmd_report)
    b = sub.add_parser("big")
    b.add_argument("--user", required=True)
    b.add_argument("--tenant", required=True)
    b.add_argument("--to", required=True)
    b.add_argument("--bytes", type=int, default=30_000_000)
    b.add_argument("--tag", default="pipeline bench")
    b.set_defaults(f=cmd_big)
    m = sub.add_parser("rss")
    m.add_argument("--state-dir", required=True)
    m.add_argument("--function", required=True)
    m.add_argument("--log", required=True)
    m.add_argument("--once", action="store_true", help="one run, whatever the queues hold")
    m.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    m.set_defaults(f=cmd_rss)
    q = sub.add_parser("queues")
    q.add_argument("--state-dir", required=True)
    q.add_argument("--fail-if-busy", action="store_true")
    q.set_defaults(f=cmd_queues)
    c = sub.add_parser("check-big")
    c.add_argument("--id", required=True)
    c.add_argument("--sender", required=True)
    c.add_argument("--recipient", required=True)
    c.set_defaults(f=cmd_check_big)
    u = sub.add_parser("cpu")
    u.add_argument("--since")
    u.add_argument("processes", nargs="+", help="LABEL=PID or LABEL=@PID (whole session)")
    u.set_defaults(f=cmd_cpu)
    a = p.parse_args()
    if a.cmd == "rss":
        a.command = a.command[1:] if a.command[:1] == ["--"] else a.command
        if not a.command:
            p.error("rss needs -- COMMAND")
    a.f(a)


if __name__ == "__main__":
    main()
