"""A webhook receiver for the integration tests and the demo: verifies every delivery with the
Standard Webhooks reference library (standardwebhooks, not our code) and records it.

    python tests/webhook_receiver.py DIR

Listens on 127.0.0.1 (a free port, printed as `webhook-receiver: 127.0.0.1:<port>`). Each
endpoint is a path; DIR/endpoints.json (re-read on every request, written by the test) gives
each its secret and its behaviour:

    {"/ok": {"secret": "whsec_...", "mode": "ok"}, ...}

mode `ok` answers 204, `flaky` answers 500 to the first delivery of each webhook-id and 204 to
the next, `down` answers 503. Every request is appended to DIR/received.jsonl as
{"path", "id", "timestamp", "verified", "error", "answered", "body"}. SIGTERM stops it.
"""

import json
import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

DIR = sys.argv[1]
LOCK = threading.Lock()
SEEN: set[str] = set()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args):
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        with open(os.path.join(DIR, "endpoints.json"), encoding="utf-8") as f:
            endpoint = json.load(f).get(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified, error = False, None
        if endpoint is None:
            error = "no such endpoint"
        else:
            try:
                Webhook(endpoint["secret"]).verify(body, headers)
                verified = True
            except WebhookVerificationError as e:
                error = str(e)
        msg_id = headers.get("webhook-id", "")
        mode = endpoint["mode"] if endpoint else "missing"
        with LOCK:
            if not verified:
                answered = 401
            elif mode == "ok":
                answered = 204
            elif mode == "flaky":
                answered = 204 if msg_id in SEEN else 500
                SEEN.add(msg_id)
            else:
                answered = 503
            record = {"path": self.path, "id": msg_id, "timestamp": headers.get("webhook-timestamp"),
                      "verified": verified, "error": error, "answered": answered,
                      "body": body.decode("utf-8", "replace")}
            with open(os.path.join(DIR, "received.jsonl"), "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        self.send_response(answered)
        self.send_header("content-length", "0")
        self.end_headers()


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"webhook-receiver: 127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
