#!/usr/bin/env python3
"""Writes the seed sessions of the imap_session and pop3_session fuzz targets
(fuzz/seeds/imap_session/, fuzz/seeds/pop3_session/). The input format is in
fuzz/fuzz_targets/common.rs: an options byte, then the client's bytes where FF FF is a pause,
FF 'D' a delivery to the user's INBOX and FF 'X' another client's expunge of its oldest
message. Run it after changing a seed: python3 fuzz/seeds/sessions.py"""

import base64
import os

HERE = os.path.dirname(os.path.abspath(__file__))
USER = b"mario.rossi@pec.example.it"
PASSWORD = b"correct horse battery staple"
PLAIN = base64.b64encode(b"\0" + USER + b"\0" + PASSWORD)
P, D, X = b"\xff\xff", b"\xffD", b"\xffX"

# Options byte: bit 0 implicit TLS, bit 1 keep the connection open, bits 2..4 the buffer
# (0: 64 KiB, 1: 1 octet, 2: 3 octets, 3: 16, 4: 64, 5: 256, 6: 1024, 7: 4096).
IMPLICIT, STARTTLS, KEEP_OPEN = 1, 0, 2


def buf(i):
    return i << 2


def lines(*ls):
    return b"".join(l if l in (P, D, X) else l + b"\r\n" for l in ls)


DRAFT = b"From: mario.rossi@pec.example.it\r\nSubject: new draft\r\n\r\nhello\r\n"
NOTE = b"Subject: note\r\n\r\n.dot line\r\n"
LOGIN = b'LOGIN ' + USER + b' "' + PASSWORD + b'"'

IMAP = {
    "implicit-full": (IMPLICIT, lines(
        b"a1 CAPABILITY",
        b"a2 " + LOGIN, P,
        b'a3 LIST "" *',
        b"a4 SELECT INBOX", P,
        b"a5 FETCH 1:* (FLAGS UID RFC822.SIZE INTERNALDATE ENVELOPE BODYSTRUCTURE)",
        b"a6 FETCH 2 (BODY[] BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] BODY[1] BODY[TEXT] RFC822.HEADER BODY[2.MIME] BODY[]<0.20>)", P,
        b"a7 STORE 1 +FLAGS (\\Deleted)",
        b"a8 EXPUNGE", P,
        b"a9 UID FETCH 1:* (FLAGS)",
        b'a10 SEARCH UNSEEN SUBJECT "dots"',
        b"a11 APPEND Drafts (\\Draft) {%d}" % len(DRAFT), P) + DRAFT + lines(b"", P,
        b"a12 APPEND Sent (\\Seen) \"04-Dec-2026 10:00:00 +0100\" {%d+}" % len(NOTE)) + NOTE + lines(b"",
        b"a13 STATUS Sent (MESSAGES UIDNEXT UIDVALIDITY UNSEEN RECENT)",
        b"a14 GETQUOTAROOT INBOX",
        b"a15 NAMESPACE",
        b"a16 COPY 1 Trash",
        b"a17 UID MOVE 3 Trash", P,
        b"a18 IDLE", P, D, b"DONE", P,
        b"a19 CLOSE",
        b"a20 LOGOUT")),
    "starttls-authenticate": (STARTTLS, lines(
        b"a1 CAPABILITY",
        b"a2 " + LOGIN, P,
        b"a3 STARTTLS", P,
        b"a4 CAPABILITY",
        b"a5 AUTHENTICATE PLAIN", P,
        PLAIN, P,
        b"a6 EXAMINE INBOX", P,
        b"a7 FETCH 1:* FAST",
        b"a8 STORE 1 +FLAGS (\\Seen)",
        b"a9 NOOP",
        b"a10 LOGOUT")),
    "sasl-ir-idle-outside": (IMPLICIT | buf(1), lines(
        b"t1 AUTHENTICATE PLAIN " + PLAIN, P,
        b"t2 SELECT inbox", P,
        b"t3 IDLE", P, D, X, b"DONE", P,
        b"t4 UID SEARCH ALL",
        b"t5 STORE 1:* +FLAGS.SILENT (\\Deleted)",
        b"t6 UID EXPUNGE 1:*",
        b"t7 UNSELECT",
        b"t8 LOGOUT")),
    "hostile": (IMPLICIT, lines(
        b"x1 LOGIN anna.bianchi@pec.example.it wrong", P,
        b'x2 LOGIN luca.verdi@pec.example.it "' + PASSWORD + b'"', P,
        b"x3 FETCH 1 BODY[]",
        b"x4 " + LOGIN, P,
        b"x5 APPEND INBOX {5}", P, b"hello", P,
        b'x6 SELECT "../anna.bianchi@pec.example.it/INBOX"',
        b"x7 CREATE foo",
        b"x8 ENABLE UTF8=ACCEPT",
        b'x9 ID ("name" "fuzz")',
        b'x10 LSUB "" "*"',
        b"x11 SELECT Trash", P,
        b"x12 COPY 1:* INBOX",
        b"x13 STORE 1:* FLAGS.SILENT (\\Seen $x)",
        b"x14 SEARCH",
        b"x15 APPEND Drafts {99999999}", P,
        b"x16 NOT A COMMAND",
        b'x17 GETQUOTA ""',
        b'x18 SETQUOTA "" (STORAGE 1)',
        b"x19 AUTHENTICATE PLAIN " + PLAIN,
        b"x20 LOGOUT")),
    "pipelined-small-buffer": (IMPLICIT | buf(2), lines(
        b"p1 " + LOGIN,
        b"p2 SELECT INBOX",
        b"p3 FETCH 1:3 (UID FLAGS BODY.PEEK[])",
        b"p4 APPEND Drafts {%d+}" % len(NOTE)) + NOTE + lines(b"",
        b"p5 UID STORE 2 -FLAGS (\\Seen)",
        b"p6 SEARCH FLAGGED",
        b"p7 MOVE 2 Junk",
        b"p8 EXPUNGE",
        b"p9 LOGOUT")),
    "keep-open-idle": (IMPLICIT | KEEP_OPEN, lines(
        b"k1 " + LOGIN, P,
        b"k2 SELECT INBOX", P,
        b"k3 IDLE", P)),
    "keep-open-login": (STARTTLS | KEEP_OPEN, lines(b"k1 CAPABILITY")),
}

POP3 = {
    "implicit-full": (IMPLICIT, lines(
        b"CAPA", P,
        b"USER " + USER, P,
        b"PASS " + PASSWORD, P,
        b"STAT", b"LIST", b"LIST 2", b"UIDL", b"UIDL 3", P,
        b"RETR 1", P,
        b"TOP 2 3", P,
        b"RETR 3", P,
        b"DELE 1", b"RSET", b"DELE 3", b"NOOP", b"RETR 3", P,
        b"QUIT")),
    "stls-auth-plain": (STARTTLS, lines(
        b"CAPA",
        b"USER " + USER, P,
        b"STLS", P,
        b"CAPA",
        b"AUTH PLAIN " + PLAIN, P,
        b"STAT", b"TOP 3 0", b"RETR 2", b"DELE 2",
        b"QUIT")),
    "sasl-continuation": (IMPLICIT, lines(
        b"AUTH", P,
        b"AUTH PLAIN", P, b"*", P,
        b"AUTH PLAIN", P, PLAIN, P,
        b"UIDL", b"DELE 2", b"QUIT")),
    "hostile": (IMPLICIT, lines(
        b"APOP mario c4c9334bac560ecc979e58001b3e22fb",
        b"USER anna.bianchi@pec.example.it", b"PASS wrong", P,
        b"USER luca.verdi@pec.example.it", b"PASS " + PASSWORD, P,
        b"AUTH PLAIN =",
        b"AUTH CRAM-MD5",
        b"A" * 600,
        b"RETR \xc3\x28",
        b"USER " + USER, b"PASS " + PASSWORD, P,
        b"RETR 0", b"RETR 99999999999", b"DELE 1", b"DELE 1", b"LIST 1",
        b"TOP 2 99999999999999999999", b"STLS", b"USER x", b"PASS x",
        b"QUIT", b"STAT")),
    "outside-changes": (IMPLICIT | buf(1), lines(
        b"USER " + USER, b"PASS " + PASSWORD, P,
        X,
        b"RETR 1", b"TOP 1 1", P,
        D,
        b"STAT", b"DELE 1", b"DELE 2", b"QUIT")),
    "pipelined-small-buffer": (IMPLICIT | buf(2), lines(
        b"USER " + USER, b"PASS " + PASSWORD,
        b"STAT", b"UIDL", b"RETR 2", b"TOP 3 1", b"DELE 3", b"QUIT", b"NOOP")),
    "keep-open": (IMPLICIT | KEEP_OPEN, lines(
        b"USER " + USER, b"PASS " + PASSWORD, P, b"DELE 1", b"STAT")),
}

for target, seeds in (("imap_session", IMAP), ("pop3_session", POP3)):
    folder = os.path.join(HERE, target)
    os.makedirs(folder, exist_ok=True)
    for name, (options, script) in seeds.items():
        with open(os.path.join(folder, name + ".bin"), "wb") as f:
            f.write(bytes([options]) + script)
