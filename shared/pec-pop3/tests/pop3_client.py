#!/usr/bin/env python3
"""A person's POP3 client (Python's stdlib poplib) against pec-pop3, run by tests/pop3.rs.

Arguments: TLS_PORT PLAIN_PORT CAFILE USER PASSWORD MESSAGE_DIR. The mailbox's INBOX holds
three delivered messages whose bytes are MESSAGE_DIR/1.eml, 2.eml, 3.eml (3 has lines that
start with a dot). The script deletes message 2 and nothing else; the test then checks the
store. Any failure exits non-zero.
"""
import poplib
import re
import ssl
import sys
import time

tls_port, plain_port, cafile, user, password, msgdir = sys.argv[1:7]
msgs = [open("%s/%d.eml" % (msgdir, i), "rb").read() for i in (1, 2, 3)]


def check(cond, what):
    if not cond:
        print("FAILED: " + what, flush=True)
        sys.exit(1)


ctx = ssl.create_default_context(cafile=cafile)


def connect():
    return poplib.POP3_SSL("127.0.0.1", int(tls_port), context=ctx, timeout=10)


def login():
    """Logs in, waiting (5 s at most) while an earlier session's lock is still being freed."""
    deadline = time.monotonic() + 5
    while True:
        p = connect()
        p.user(user)
        try:
            p.pass_(password)
            return p
        except poplib.error_proto as e:
            p.close()
            if "[IN-USE]" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def joined(lines):
    """A multi-line answer's lines (un-stuffed by poplib) back as CRLF bytes."""
    return b"\r\n".join(lines) + b"\r\n"


# --- POP3S: capabilities, identical refusals for a wrong password and an unknown user.
p = connect()
check(p.getwelcome().startswith(b"+OK"), "greeting %r" % p.getwelcome())
caps = p.capa()
check("USER" in caps and caps.get("SASL") == ["PLAIN"], "USER and SASL PLAIN over TLS: %r" % caps)
check("UIDL" in caps and "TOP" in caps and "RESP-CODES" in caps, "UIDL TOP RESP-CODES: %r" % caps)
check("STLS" not in caps, "no STLS over TLS: %r" % caps)
answers = []
for u, pw in ((user, "wrong password"), ("nobody@pec.example.it", password)):
    check(p.user(u).startswith(b"+OK"), "USER always +OK")
    try:
        p.pass_(pw)
        check(False, "a bad login was accepted")
    except poplib.error_proto as e:
        answers.append(str(e))
check(answers[0] == answers[1], "same answer for both: %r" % answers)
check("-ERR [AUTH]" in answers[0], "an [AUTH] answer: %r" % answers)
p.quit()

# --- Port 110: nothing but STLS before TLS, then a session.
p = poplib.POP3("127.0.0.1", int(plain_port), timeout=10)
caps = p.capa()
check("STLS" in caps and "USER" not in caps and "SASL" not in caps, "clear-text CAPA: %r" % caps)
try:
    p.user(user)
    check(False, "USER accepted before STLS")
except poplib.error_proto as e:
    check("STLS" in str(e), "the refusal names STLS: %s" % e)
p.stls(context=ctx)
caps = p.capa()
check("USER" in caps and caps.get("SASL") == ["PLAIN"] and "STLS" not in caps, "CAPA after STLS: %r" % caps)
p.user(user)
check(p.pass_(password).startswith(b"+OK"), "login after STLS")
count, size = p.stat()
check(count == 3 and size == sum(len(m) for m in msgs), "STAT %r" % ((count, size),))
resp, listing, _ = p.list()
check(listing == [b"%d %d" % (i + 1, len(m)) for i, m in enumerate(msgs)], "LIST %r" % listing)
check(p.list(2) == b"+OK 2 %d" % len(msgs[1]), "LIST 2")
resp, uidls, _ = p.uidl()
first = [line.split()[1] for line in uidls]
check([line.split()[0] for line in uidls] == [b"1", b"2", b"3"], "UIDL numbers %r" % uidls)
check(len(set(first)) == 3, "unique UIDLs %r" % first)
check(all(re.fullmatch(rb"[0-9A-F]{16}", u) for u in first), "UIDL format %r" % first)
check(p.uidl(3) == b"+OK 3 " + first[2], "UIDL 3")
p.quit()

# --- Another session: the same UIDLs; a concurrent session is refused; exact bytes; TOP.
p = login()
resp, uidls, _ = p.uidl()
check([line.split()[1] for line in uidls] == first, "UIDLs stable across sessions: %r" % uidls)
q = connect()
q.user(user)
try:
    q.pass_(password)
    check(False, "a second session of the same mailbox was opened")
except poplib.error_proto as e:
    check("[IN-USE]" in str(e), "second session gets IN-USE: %s" % e)
q.quit()
for i in (1, 3):
    resp, lines, _ = p.retr(i)
    check(resp.startswith(b"+OK"), "RETR %d: %r" % (i, resp))
    check(joined(lines) == msgs[i - 1], "RETR %d returns the stored bytes exactly: %r" % (i, lines))
headers = msgs[1][: msgs[1].index(b"\r\n\r\n")]
body = msgs[1][msgs[1].index(b"\r\n\r\n") + 4 :].split(b"\r\n")
resp, lines, _ = p.top(2, 0)
check(joined(lines) == headers + b"\r\n\r\n", "TOP 2 0: %r" % lines)
resp, lines, _ = p.top(2, 2)
check(joined(lines) == headers + b"\r\n\r\n" + body[0] + b"\r\n" + body[1] + b"\r\n", "TOP 2 2: %r" % lines)
resp, lines, _ = p.top(3, 1000)
check(joined(lines) == msgs[2], "TOP with more lines than the body: %r" % lines)

# DELE then RSET keeps the message.
check(p.dele(2).startswith(b"+OK"), "DELE 2")
check(p.stat() == (2, len(msgs[0]) + len(msgs[2])), "STAT after DELE")
for call in (lambda: p.retr(2), lambda: p.dele(2), lambda: p.list(2), lambda: p.top(2, 0)):
    try:
        call()
        check(False, "a deleted message still answered")
    except poplib.error_proto:
        pass
resp, listing, _ = p.list()
check(listing == [b"1 %d" % len(msgs[0]), b"3 %d" % len(msgs[2])], "LIST skips deleted: %r" % listing)
check(p.rset().startswith(b"+OK"), "RSET")
check(p.stat()[0] == 3, "RSET unmarks")
p.quit()

# --- A connection dropped after DELE deletes nothing.
p = login()
p.dele(1)
p.dele(2)
p.close()  # no QUIT
p = login()
check(p.stat() == (3, sum(len(m) for m in msgs)), "a dropped connection deleted nothing")
resp, uidls, _ = p.uidl()
check([line.split()[1] for line in uidls] == first, "UIDLs unchanged")

# --- DELE + QUIT removes that message only.
p.dele(2)
check(p.quit().startswith(b"+OK"), "QUIT after DELE")
p = login()
check(p.stat() == (2, len(msgs[0]) + len(msgs[2])), "one message left out: %r" % (p.stat(),))
resp, uidls, _ = p.uidl()
check([line.split()[1] for line in uidls] == [first[0], first[2]], "UIDLs of the others kept: %r" % uidls)
resp, lines, _ = p.retr(2)
check(joined(lines) == msgs[2], "message 3 is now number 2")
p.quit()
print("ALL OK", flush=True)
