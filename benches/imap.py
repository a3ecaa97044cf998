"""Helpers of benches/imap.sh: IMAP clients (Python's imaplib, and asyncio for many connections)
and /proc readings of the server's memory. Standard library only. Every server is reached over
implicit TLS on loopback; certificates are not verified (self-signed, 127.0.0.1 only).

  time   LOGIN + SELECT INBOX + UID FETCH 1:* (UID FLAGS RFC822.SIZE) against each --server, the
         servers taking turns run after run; per-step medians, and a check that every server
         listed the same messages (sizes and flags)
  big    UID FETCH of one large message (BODY.PEEK[]): time, and the server process's resident
         set before, at its peak (VmHWM after resetting it, and VmRSS sampled every 5 ms) and after
  hold   N connections logged in with INBOX selected, then IDLE: the server's RSS before, with
         them SELECTed and with them IDLE, and its CPU use while they idle
  hash   print a mailbox's stored Argon2id hash (PHC string), for Dovecot's passwd-file (needs
         boto3: the project's venv Python, and the stack's environment)
  summary  the closing table, from the JSON files the other subcommands wrote
"""

import argparse
import asyncio
import imaplib
import json
import re
import ssl
import statistics
import sys
import threading
import time


def tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def hostport(value):
    host, _, port = value.rpartition(":")
    return host or "127.0.0.1", int(port)


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit("no %s in /proc/%d/status" % (field, pid))


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / 100.0  # USER_HZ is 100 on Linux


def reset_peak(pid):
    """Resets the process's VmHWM to its current RSS (clear_refs 5); False if not allowed."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---- time ------------------------------------------------------------------------------------

def one_listing(name, addr, user, password):
    host, port = hostport(addr)
    t0 = time.perf_counter()
    m = imaplib.IMAP4_SSL(host, port, ssl_context=tls(), timeout=600)
    t1 = time.perf_counter()
    typ, data = m.login(user, password)
    if typ != "OK":
        raise SystemExit("%s: LOGIN %s %s" % (name, typ, data))
    t2 = time.perf_counter()
    typ, data = m.select("INBOX")
    if typ != "OK":
        raise SystemExit("%s: SELECT %s %s" % (name, typ, data))
    exists = int(data[0])
    t3 = time.perf_counter()
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
    t4 = time.perf_counter()
    if typ != "OK":
        raise SystemExit("%s: UID FETCH %s %s" % (name, typ, data))
    listing = []
    for line in data:
        if not line:
            continue
        if isinstance(line, tuple):
            line = line[0]
        size = re.search(rb"RFC822\.SIZE (\d+)", line)
        flags = re.search(rb"FLAGS \(([^)]*)\)", line)
        if size is None or flags is None:
            continue
        fl = sorted(f for f in flags.group(1).decode().split() if f != "\\Recent")
        listing.append((int(size.group(1)), " ".join(fl)))
    m.logout()
    return {
        "connect": t1 - t0, "login": t2 - t1, "select": t3 - t2, "fetch": t4 - t3,
        "total": t4 - t0, "exists": exists, "listed": len(listing),
    }, listing


def cmd_time(a):
    servers = [(s[0], s[1], s[2], s[3]) for s in a.server]
    runs = {s[0]: [] for s in servers}
    listings = {}
    for r in range(a.runs):
        for name, addr, user, password in servers:
            result, listing = one_listing(name, addr, user, password)
            if a.expect and (result["exists"] != a.expect or result["listed"] != a.expect):
                raise SystemExit("%s: SELECT said %d messages and UID FETCH listed %d, expected %d"
                                 % (name, result["exists"], result["listed"], a.expect))
            runs[name].append(result)
            listings.setdefault(name, sorted(listing))
            print("  run %d %-8s connect+TLS %6.1f ms  LOGIN %6.1f ms  SELECT %8.1f ms  UID FETCH %8.1f ms  total %8.1f ms"
                  % (r + 1, name, result["connect"] * 1e3, result["login"] * 1e3,
                     result["select"] * 1e3, result["fetch"] * 1e3, result["total"] * 1e3),
                  flush=True)
    names = [s[0] for s in servers]
    same = all(listings[n] == listings[names[0]] for n in names)
    print("  same messages on every server (RFC822.SIZE and FLAGS of each): %s" % ("yes" if same else "NO"))
    out = {"same": same, "servers": {}}
    for name in names:
        rs = runs[name]
        med = {k: statistics.median(x[k] for x in rs) for k in ("connect", "login", "select", "fetch", "total")}
        out["servers"][name] = {"median": med, "first": rs[0], "runs": rs}
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)
    if not same:
        sys.exit(1)


# ---- big -------------------------------------------------------------------------------------

def cmd_big(a):
    host, port = hostport(a.address)
    m = imaplib.IMAP4_SSL(host, port, ssl_context=tls(), timeout=600)
    m.login(a.user, a.password)
    typ, data = m.select("INBOX", readonly=True)
    results = []
    for r in range(a.runs):
        time.sleep(1)
        reset = reset_peak(a.pid)
        before = status_kib(a.pid, "VmRSS")
        peak = [before]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    peak[0] = max(peak[0], status_kib(a.pid, "VmRSS"))
                except (OSError, SystemExit):
                    return
                time.sleep(0.005)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        typ, data = m.uid("FETCH", "1", "(BODY.PEEK[])")
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
        if typ != "OK" or not data or not isinstance(data[0], tuple):
            raise SystemExit("UID FETCH 1 BODY.PEEK[]: %s %s" % (typ, str(data)[:200]))
        got = len(data[0][1])
        hwm = status_kib(a.pid, "VmHWM") if reset else 0
        time.sleep(2)
        after = status_kib(a.pid, "VmRSS")
        top = max(peak[0], hwm)
        results.append({"seconds": seconds, "bytes": got, "rss_before_kib": before,
                        "peak_kib": top, "growth_kib": top - before, "rss_after_kib": after,
                        "hwm_reset": reset})
        print("  fetch %d: %.1f MB in %.2f s; runner RSS %.1f MiB before, peak %.1f MiB (+%.1f MiB), %.1f MiB 2 s after"
              % (r + 1, got / 1e6, seconds, before / 1024, top / 1024, (top - before) / 1024, after / 1024),
              flush=True)
        if a.expect_bytes and got != a.expect_bytes:
            raise SystemExit("fetched %d bytes, the message has %d" % (got, a.expect_bytes))
    m.logout()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)


# ---- hold ------------------------------------------------------------------------------------

class Conn:
    def __init__(self, reader, writer):
        self.reader, self.writer, self.n = reader, writer, 0

    async def command(self, text):
        self.n += 1
        tag = "a%d" % self.n
        self.writer.write(("%s %s\r\n" % (tag, text)).encode())
        await self.writer.drain()
        return await self.until(tag)

    async def until(self, tag):
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            if line.startswith(b"* BYE"):
                raise ConnectionError(line.decode(errors="replace").strip())
            if line.startswith(tag.encode() + b" "):
                if not line.startswith(tag.encode() + b" OK"):
                    raise ConnectionError(line.decode(errors="replace").strip())
                return line


async def open_session(host, port, user, password, ctx, gate):
    async with gate:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ctx, limit=1 << 20), 60)
        c = Conn(reader, writer)
        greeting = await asyncio.wait_for(reader.readline(), 60)
        if not greeting.startswith(b"* OK"):
            raise ConnectionError(greeting.decode(errors="replace").strip())
        await asyncio.wait_for(c.command('LOGIN "%s" "%s"' % (user, password)), 120)
        await asyncio.wait_for(c.command("SELECT INBOX"), 120)
        return c


async def hold(a):
    host, port = hostport(a.address)
    ctx = tls()
    gate = asyncio.Semaphore(a.ramp)
    out = {"connections": a.count}
    time.sleep(1)
    out["rss_before_kib"] = status_kib(a.pid, "VmRSS")
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(open_session(host, port, a.user, a.password, ctx, gate) for _ in range(a.count)),
        return_exceptions=True)
    conns = [c for c in results if isinstance(c, Conn)]
    errors = [repr(e) for e in results if not isinstance(e, Conn)]
    out["opened"] = len(conns)
    out["open_seconds"] = time.perf_counter() - t0
    out["errors"] = errors[:5]
    print("  %d of %d connections logged in with INBOX selected in %.1f s%s"
          % (len(conns), a.count, out["open_seconds"], "; first errors: %s" % errors[:3] if errors else ""),
          flush=True)
    await asyncio.sleep(a.settle)
    out["rss_selected_kib"] = status_kib(a.pid, "VmRSS")
    # IDLE on every connection; the server polls each one's change counter every second.
    for c in conns:
        c.n += 1
        c.idle_tag = "a%d" % c.n
        c.writer.write(("%s IDLE\r\n" % c.idle_tag).encode())
    for c in conns:
        await c.writer.drain()
    idling = 0
    for c in conns:
        line = await asyncio.wait_for(c.reader.readline(), 60)
        idling += line.startswith(b"+")
    out["idling"] = idling
    cpu0 = {k: cpu_seconds(p) for k, p in a.cpu_pid}
    t1 = time.perf_counter()
    await asyncio.sleep(a.hold)
    out["rss_idle_kib"] = status_kib(a.pid, "VmRSS")
    window = time.perf_counter() - t1
    out["idle_cpu_percent"] = {k: 100.0 * (cpu_seconds(p) - cpu0[k]) / window for k, p in a.cpu_pid}
    for c in conns:
        c.writer.write(b"DONE\r\n")
    done = 0
    for c in conns:
        try:
            await asyncio.wait_for(c.until(c.idle_tag), 60)
            await asyncio.wait_for(c.command("LOGOUT"), 30)
            done += 1
        except (ConnectionError, asyncio.TimeoutError):
            pass
        c.writer.close()
    out["logged_out"] = done
    per_sel = (out["rss_selected_kib"] - out["rss_before_kib"]) / max(1, len(conns))
    per_idle = (out["rss_idle_kib"] - out["rss_before_kib"]) / max(1, len(conns))
    out["per_connection_selected_kib"] = per_sel
    out["per_connection_idle_kib"] = per_idle
    print("  runner RSS: %.1f MiB before; %.1f MiB with them SELECTed (%.0f KiB a connection); %.1f MiB with %d in IDLE for %d s (%.0f KiB a connection)"
          % (out["rss_before_kib"] / 1024, out["rss_selected_kib"] / 1024, per_sel,
             out["rss_idle_kib"] / 1024, idling, a.hold, per_idle))
    print("  CPU while they idled: " + ", ".join("%s %.0f%% of a core" % (k, v) for k, v in out["idle_cpu_percent"].items()))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f)
    if len(conns) < a.count:
        sys.exit(1)


def cmd_hold(a):
    asyncio.run(hold(a))


# ---- hash, summary ---------------------------------------------------------------------------

def cmd_hash(a):
    import os
    import boto3
    client = boto3.client("dynamodb", endpoint_url=os.environ["AWS_ENDPOINT_URL_DYNAMODB"])
    item = client.get_item(TableName=os.environ["PEC_STATE_TABLE"],
                           Key={"pk": {"S": "MBX#" + a.address.lower()}, "sk": {"S": "MBX"}},
                           ConsistentRead=True).get("Item")
    if not item:
        raise SystemExit("no mailbox %s" % a.address)
    print(json.loads(item["doc"]["S"])["password_hash"])


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def cmd_summary(a):
    d = a.dir
    fill, timing, big, held = (load("%s/%s.json" % (d, n)) for n in ("fill", "time", "big", "hold"))
    ms = lambda s: "%.0f ms" % (s * 1e3) if s >= 0.1 else "%.1f ms" % (s * 1e3)
    print("  %-44s %22s %20s %9s" % ("%d messages in INBOX (median of %d runs)" % (a.messages, a.runs),
                                     "ours (edge+emulators)", "Dovecot (Maildir)", "ours/Dov."))
    if timing:
        o, v = timing["servers"]["ours"], timing["servers"].get("dovecot")
        rows = [("connect + TLS handshake", "connect"), ("LOGIN (same Argon2id hash)", "login"),
                ("SELECT INBOX", "select"), ("UID FETCH 1:* (UID FLAGS RFC822.SIZE)", "fetch"),
                ("total", "total")]
        for label, k in rows:
            ours = o["median"][k]
            if v:
                dov = v["median"][k]
                print("  %-44s %22s %20s %8.1fx" % (label, ms(ours), ms(dov), ours / dov if dov else float("inf")))
            else:
                print("  %-44s %22s %20s %9s" % (label, ms(ours), "-", "-"))
        if v:
            print("  %-44s %22s %20s %8.1fx" % ("total, first run (Dovecot builds its index)", ms(o["first"]["total"]),
                                              ms(v["first"]["total"]), o["first"]["total"] / v["first"]["total"]))
    if fill:
        print("  %-44s %s" % ("fill (DynamoMailStore::append, %d parallel)" % fill["concurrency"],
                              "%d messages, %.0f MB in %.0f s: %.1f messages/s" % (
                                  fill["messages"], fill["bytes"] / 1e6, fill["seconds"],
                                  fill["messages"] / fill["seconds"])))
    if big:
        first = big[0]
        secs = statistics.median(r["seconds"] for r in big)
        print("  %-44s %s" % ("fetch one %.0f MB message (ours)" % (first["bytes"] / 1e6),
                              "%.2f s (median of %d); first fetch: runner RSS +%.0f MiB (%.0f -> %.0f MiB, %.1fx the message)" % (
                                  secs, len(big), first["growth_kib"] / 1024, first["rss_before_kib"] / 1024,
                                  first["peak_kib"] / 1024, first["growth_kib"] * 1024 / first["bytes"])))
        print("  %-44s %s" % ("", "largest peak over the %d fetches %.0f MiB; %.0f MiB 2 s after the last" % (
            len(big), max(r["peak_kib"] for r in big) / 1024, big[-1]["rss_after_kib"] / 1024)))
    if held:
        print("  %-44s %s" % ("%d idle IMAP connections (ours)" % held["connections"],
                              "%d open; runner RSS %.0f -> %.0f MiB SELECTed (%.0f KiB each), %.0f MiB in IDLE (%.0f KiB each)" % (
                                  held["opened"], held["rss_before_kib"] / 1024, held["rss_selected_kib"] / 1024,
                                  held["per_connection_selected_kib"], held["rss_idle_kib"] / 1024,
                                  held["per_connection_idle_kib"])))
        print("  %-44s %s" % ("  CPU while they IDLE (1 s change polls)",
                              ", ".join("%s %.0f%%" % (k, v) for k, v in held["idle_cpu_percent"].items())
                              + " of one core"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time")
    t.add_argument("--server", nargs=4, action="append", required=True,
                   metavar=("NAME", "HOST:PORT", "USER", "PASSWORD"))
    t.add_argument("--runs", type=int, default=5)
    t.add_argument("--expect", type=int, default=0, help="messages INBOX must hold")
    t.add_argument("--json")
    b = sub.add_parser("big")
    b.add_argument("--address", required=True, help="HOST:PORT")
    b.add_argument("--user", required=True)
    b.add_argument("--password", required=True)
    b.add_argument("--pid", type=int, required=True, help="the server process")
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--expect-bytes", type=int, default=0)
    b.add_argument("--json")
    h = sub.add_parser("hold")
    h.add_argument("--address", required=True, help="HOST:PORT")
    h.add_argument("--user", required=True)
    h.add_argument("--password", required=True)
    h.add_argument("--pid", type=int, required=True, help="the server process")
    h.add_argument("--count", type=int, default=500)
    h.add_argument("--ramp", type=int, default=16, help="connections being opened at once")
    h.add_argument("--settle", type=float, default=3)
    h.add_argument("--hold", type=int, default=10, help="seconds in IDLE")
    h.add_argument("--cpu-pid", nargs=2, action="append", default=[], metavar=("NAME", "PID"),
                   type=str)
    h.add_argument("--json")
    x = sub.add_parser("hash")
    x.add_argument("--address", required=True)
    s = sub.add_parser("summary")
    s.add_argument("--dir", required=True)
    s.add_argument("--messages", type=int, required=True)
    s.add_argument("--runs", type=int, required=True)
    a = p.parse_args()
    if a.cmd == "hold":
        a.cpu_pid = [(k, int(v)) for k, v in a.cpu_pid]
    {"time": cmd_time, "big": cmd_big, "hold": cmd_hold, "hash": cmd_hash,
     "summary": cmd_summary}[a.cmd](a)


if __name__ == "__main__":
    main()
