#!/usr/bin/env python3
"""What a user's IMAP client sees: logs in over IMAPS with Python's imaplib (a client nobody
here wrote) and prints each folder with its messages (UID, flags, size, From, Subject).

    imap_peek.py --host 127.0.0.1 --port 993 --ca cert.pem --user a@b --password pw
                 [--folders INBOX Sent] [--save DIR] [--json]

--save writes each message as DIR/<folder>/<uid>.eml exactly as fetched (BODY.PEEK[], so
nothing is marked seen); --json prints one JSON document instead of the listing.
"""

import argparse
import email
import email.header
import email.policy
import imaplib
import json
import os
import re
import ssl
import sys


def decode(value):
    if value is None:
        return ""
    return str(email.header.make_header(email.header.decode_header(value)))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ca", required=True, help="PEM certificate to trust")
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--folders", nargs="*", help="default: every folder LIST returns")
    p.add_argument("--save")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()

    ctx = ssl.create_default_context(cafile=a.ca)
    ctx.check_hostname = False
    imap = imaplib.IMAP4_SSL(a.host, a.port, ssl_context=ctx, timeout=30)
    imap.login(a.user, a.password)
    folders = a.folders
    if not folders:
        typ, lines = imap.list()
        folders = []
        for line in lines:
            m = re.match(rb'\((.*?)\) "(.*?)" (.*)', line)
            name = m.group(3).decode()
            folders.append(name.strip('"'))
    out = {"user": a.user, "folders": []}
    for folder in folders:
        typ, data = imap.select('"%s"' % folder, readonly=True)
        if typ != "OK":
            sys.exit("SELECT %s: %s" % (folder, data))
        entry = {"name": folder, "messages": []}
        typ, data = imap.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE BODY.PEEK[])") if int(data[0]) else ("OK", [])
        for item in data:
            if not isinstance(item, tuple):
                continue
            meta, body = item
            uid = int(re.search(rb"UID (\d+)", meta).group(1))
            flags = re.search(rb"FLAGS \((.*?)\)", meta).group(1).decode().split()
            size = int(re.search(rb"RFC822.SIZE (\d+)", meta).group(1))
            msg = email.message_from_bytes(body, policy=email.policy.compat32)
            entry["messages"].append({
                "uid": uid, "flags": flags, "size": size, "bytes": len(body),
                "from": decode(msg.get("From")), "subject": decode(msg.get("Subject")),
                "x-ricevuta": msg.get("X-Ricevuta", ""), "x-trasporto": msg.get("X-Trasporto", ""),
            })
            if a.save:
                d = os.path.join(a.save, folder)
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, "%d.eml" % uid), "wb") as f:
                    f.write(body)
        out["folders"].append(entry)
        imap.close()
    imap.logout()
    if a.json:
        json.dump(out, sys.stdout, indent=1)
        print()
        return
    print("IMAP %s@%s:%d" % (a.user, a.host, a.port))
    for f in out["folders"]:
        print("  %-8s %d message(s)" % (f["name"], len(f["messages"])))
        for m in f["messages"]:
            kind = m["x-ricevuta"] or m["x-trasporto"] or "-"
            print("    uid %-3d %-18s %-22s %s" % (m["uid"], " ".join(m["flags"]) or "(unseen)", kind, m["subject"][:70]))


if __name__ == "__main__":
    main()
