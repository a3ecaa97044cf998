#!/usr/bin/env python3
"""A person's IMAP client (Python's stdlib imaplib) against pec-imap, run by tests/imap.rs.

Arguments: PORT CAFILE USER PASSWORD EXPECTED_FILE. The mailbox holds two delivered messages in
INBOX; EXPECTED_FILE has the first one's bytes. When the script is IDLE it prints "IDLING" and
waits (2 s at most) for the test to deliver a third message. Any failure exits non-zero.
"""
import imaplib
import re
import socket
import ssl
import sys

port, cafile, user, password, expected_file = sys.argv[1:6]
expected = open(expected_file, "rb").read()


def check(cond, what):
    if not cond:
        print("FAILED: " + what, flush=True)
        sys.exit(1)


ctx = ssl.create_default_context(cafile=cafile)
imap = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx, timeout=10)
check(b"AUTH=PLAIN" in imap.welcome or "AUTH=PLAIN" in imap.capabilities, "AUTH=PLAIN offered over TLS")

# A wrong password and an unknown user get the same answer.
answers = []
for u, p in ((user, "wrong"), ("nobody@pec.example.it", password)):
    try:
        imap.login(u, p)
        check(False, "a bad login was accepted")
    except imaplib.IMAP4.error as e:
        answers.append(str(e))
check(answers[0] == answers[1] and "AUTHENTICATIONFAILED" in answers[0], "same NO for both: %r" % answers)
imap.logout()

imap = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx, timeout=10)
typ, _ = imap.login(user, password)
check(typ == "OK", "login")

typ, folders = imap.list()
listing = b"\n".join(folders)
check(typ == "OK", "LIST")
for name, attr in ((b"INBOX", None), (b"Sent", b"\\Sent"), (b"Drafts", b"\\Drafts"), (b"Junk", b"\\Junk"), (b"Trash", b"\\Trash")):
    line = [f for f in folders if f.endswith(b" " + name) or f.endswith(b'"' + name + b'"')]
    check(line, "folder %r listed in %r" % (name, listing))
    if attr:
        check(attr in line[0], "%r has %r" % (name, attr))

typ, data = imap.select("INBOX")
check(typ == "OK" and data[0] == b"2", "SELECT INBOX: %r" % data)

typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
check(typ == "OK", "UID FETCH")
rows = [d for d in data if d]
check(len(rows) == 2, "two messages: %r" % rows)
check(re.search(rb"RFC822\.SIZE %d" % len(expected), rows[0]) is not None, "size: %r" % rows[0])
uids = [int(re.search(rb"UID (\d+)", r).group(1)) for r in rows]
check(uids == [1, 2], "uids %r" % uids)

typ, data = imap.uid("FETCH", "1", "(BODY.PEEK[])")
check(typ == "OK" and data[0][1] == expected, "BODY.PEEK[] bytes exactly")
typ, data = imap.uid("FETCH", "1", "(FLAGS)")
check(b"\\Seen" not in data[0], "PEEK does not set \\Seen")
typ, data = imap.uid("FETCH", "1", "(BODY[])")
check(data[0][1] == expected, "BODY[] bytes exactly")
check(b"\\Seen" in b" ".join(x if isinstance(x, bytes) else x[0] for x in data), "BODY[] sets \\Seen: %r" % data)
typ, data = imap.uid("FETCH", "1", "(ENVELOPE BODYSTRUCTURE)")
check(typ == "OK" and b"ENVELOPE" in data[0] and b"BODYSTRUCTURE" in data[0], "ENVELOPE/BODYSTRUCTURE %r" % data)

typ, data = imap.uid("SEARCH", None, "UNSEEN")
check(data[0].split() == [b"2"], "SEARCH UNSEEN: %r" % data)
typ, data = imap.uid("SEARCH", None, "SUBJECT", '"second"')
check(data[0].split() == [b"2"], "SEARCH SUBJECT: %r" % data)

# STORE + EXPUNGE: UIDs stay stable, UIDNEXT never goes back.
typ, data = imap.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
check(typ == "OK", "STORE")
typ, data = imap.expunge()
check(typ == "OK" and data == [b"1"], "EXPUNGE seq 1: %r" % (data,))
typ, data = imap.uid("FETCH", "1:*", "(UID)")
check([int(re.search(rb"UID (\d+)", r).group(1)) for r in data if r] == [2], "uid 2 left: %r" % data)
typ, data = imap.status("INBOX", "(UIDNEXT MESSAGES UIDVALIDITY)")
check(b"UIDNEXT 3" in data[0] and b"MESSAGES 1" in data[0], "STATUS after expunge: %r" % data)

# APPEND: never into INBOX; into Drafts, counted against the quota.
typ, before = imap.getquotaroot("INBOX")
used_before = int(re.search(rb"STORAGE (\d+) ", before[1][0]).group(1))
draft = b"From: " + user.encode() + b"\r\nSubject: draft\r\n\r\n" + b"x" * 4096 + b"\r\n"
typ, data = imap.append("INBOX", None, None, draft)
check(typ == "NO", "APPEND INBOX refused: %r" % data)
typ, data = imap.append("Drafts", "(\\Draft)", None, draft)
check(typ == "OK" and b"APPENDUID" in data[0], "APPEND Drafts: %r" % data)
typ, after = imap.getquotaroot("INBOX")
used_after = int(re.search(rb"STORAGE (\d+) ", after[1][0]).group(1))
check(used_after >= used_before + 4, "quota grew: %d -> %d" % (used_before, used_after))

# MOVE the remaining INBOX message to Trash.
typ, data = imap.uid("MOVE", "2", "Trash")
check(typ == "OK", "MOVE: %r" % data)
typ, data = imap.status("Trash", "(MESSAGES)")
check(b"MESSAGES 1" in data[0], "moved into Trash: %r" % data)
typ, data = imap.select("Drafts")
typ, data = imap.uid("MOVE", "1", "INBOX")
check(typ == "NO", "an appended message cannot be moved into INBOX: %r" % data)

# IDLE in INBOX, woken by a delivery within 2 s.
imap.select("INBOX")
tag = imap._new_tag()
imap.send(tag + b" IDLE\r\n")
line = imap.readline()
check(line.startswith(b"+"), "IDLE continuation: %r" % line)
print("IDLING", flush=True)
imap.sock.settimeout(2.0)
woken = False
try:
    while True:
        line = imap.readline()
        if b"EXISTS" in line:
            woken = True
            break
except (socket.timeout, TimeoutError):
    pass
check(woken, "IDLE woken by the delivery within 2 s")
imap.sock.settimeout(10)
imap.send(b"DONE\r\n")
while True:
    line = imap.readline()
    if line.startswith(tag):
        check(b" OK " in line, "IDLE ends OK: %r" % line)
        break
imap.logout()
print("ALL OK", flush=True)
