"""A stand-in for the Lambda Runtime API, to time the api function's cold start (benches/api.sh).

    python benches/lambda_runtime_stub.py BOOTSTRAP RUNS

Starts BOOTSTRAP (the api function's binary) RUNS times with AWS_LAMBDA_RUNTIME_API pointing
here (the rest of the environment is inherited: the local stack's). Each time it measures, from
the spawn: `init`, until the function first asks for an invocation (`GET .../invocation/next`:
configuration read, SDK clients and router built), and `first`, until it answers its first
event (an API Gateway HTTP API v2 event for `GET /v1/openapi.json`, which needs no store call).
Prints one JSON line per run and a summary with the medians. The Runtime API paths are those of
the AWS documentation (2018-06-01); nothing of Lambda's own sandbox start is in the figures.
"""

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EVENT = {
    "version": "2.0",
    "routeKey": "$default",
    "rawPath": "/v1/openapi.json",
    "rawQueryString": "",
    "headers": {"host": "api.example.test", "accept": "application/json"},
    "requestContext": {
        "accountId": "000000000000", "apiId": "local", "domainName": "api.example.test",
        "domainPrefix": "api", "requestId": "bench", "routeKey": "$default", "stage": "$default",
        "time": "05/Dec/2026:10:00:00 +0000", "timeEpoch": 1796464800000,
        "http": {"method": "GET", "path": "/v1/openapi.json", "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "bench"},
    },
    "isBase64Encoded": False,
}


class Run:
    def __init__(self):
        self.start = 0.0
        self.init = None
        self.first = None
        self.status = None
        self.served = False
        self.done = threading.Event()


RUN = Run()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *_args):
        pass

    def do_GET(self):
        if self.path.endswith("/runtime/invocation/next"):
            if RUN.init is None:
                RUN.init = time.monotonic() - RUN.start
            if RUN.served:
                # Block the second poll until the function is stopped.
                RUN.done.wait(10)
                self.send_response(500)
                self.end_headers()
                return
            RUN.served = True
            body = json.dumps(EVENT).encode()
            self.send_response(200)
            self.send_header("Lambda-Runtime-Aws-Request-Id", "bench-1")
            self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30000))
            self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                             "arn:aws:lambda:eu-south-1:000000000000:function:pec-local-api")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(404)
            self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        if "/response" in self.path:
            RUN.first = time.monotonic() - RUN.start
            try:
                RUN.status = json.loads(body).get("statusCode")
            except ValueError:
                RUN.status = None
            RUN.done.set()
        elif "/error" in self.path:
            RUN.status = "error: " + body.decode("utf-8", "replace")[:300]
            RUN.done.set()
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()


def main() -> None:
    binary, runs = sys.argv[1], int(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = dict(os.environ)
    env["AWS_LAMBDA_RUNTIME_API"] = f"127.0.0.1:{server.server_address[1]}"
    env.setdefault("AWS_LAMBDA_FUNCTION_NAME", "pec-local-api")
    env.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
    env.setdefault("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
    env.setdefault("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
    env.setdefault("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
    inits, firsts = [], []
    for i in range(runs):
        global RUN
        RUN = Run()
        RUN.start = time.monotonic()
        proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        finished = RUN.done.wait(30)
        proc.kill()
        _, err = proc.communicate()
        if not finished or RUN.status != 200:
            sys.exit(f"run {i + 1}: no 200 answer (status {RUN.status!r}): "
                     f"{err.decode('utf-8', 'replace')[-800:]}")
        inits.append(RUN.init * 1000)
        firsts.append(RUN.first * 1000)
        print(json.dumps({"run": i + 1, "init_ms": round(RUN.init * 1000, 1),
                          "first_response_ms": round(RUN.first * 1000, 1)}))
    print(json.dumps({"runs": runs, "init_ms_median": round(statistics.median(inits), 1),
                      "first_response_ms_median": round(statistics.median(firsts), 1)}))
    server.shutdown()


if __name__ == "__main__":
    main()
