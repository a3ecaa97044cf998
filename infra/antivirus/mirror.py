#!/usr/bin/env python3
"""A ClamAV database mirror on 127.0.0.1 for tests and the demo (never a production mirror).

    python3 infra/antivirus/mirror.py ROOT PORT_FILE LOG_FILE

Serves the files of ROOT (plain names only) over HTTP on a free loopback port, which it writes
to PORT_FILE once listening. freshclam reads a database's version from a `Range: bytes=0-511`
GET of <db>.cvd when DNS is off, and Python's http.server ignores Range (it would answer the
whole file with 200), so this answers Range with 206 and Content-Range. Each request is
appended to LOG_FILE: `GET <path> range=<range> if-modified-since=<date> -> <status> <bytes>`.
Runs until killed.
"""
import http.server, os, re, sys

root, port_file, log_file = sys.argv[1:4]

class Mirror(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.lstrip("/")
        path = os.path.join(root, name)
        rng = self.headers.get("Range")
        status, body, headers = 404, b"", {}
        if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) and os.path.isfile(path):
            with open(path, "rb") as f:
                data = f.read()
            status, body = 200, data
            if rng is not None:
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                first = int(m.group(1)) if m else len(data)
                last = min(int(m.group(2)) if m and m.group(2) else len(data) - 1, len(data) - 1)
                if m and first <= last:
                    status, body = 206, data[first:last + 1]
                    headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
                else:
                    status, body = 416, b""
                    headers["Content-Range"] = f"bytes */{len(data)}"
        # Logged before the answer: a client that has its answer may read the log at once.
        with open(log_file, "a") as log:
            log.write(f"GET {self.path} range={rng or '-'} if-modified-since={self.headers.get('If-Modified-Since') or '-'}"
                      f" -> {status} {len(body)}\n")
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", 0), Mirror)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
