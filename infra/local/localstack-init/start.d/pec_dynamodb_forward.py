# LocalStack init hook (run in LocalStack's own process at start; infra/local/stack.sh installs it
# under $FILESYSTEM_ROOT/etc/localstack/init/start.d/). Does nothing unless
# PEC_LOCALSTACK_DYNAMODB_URL is set (the normal local stack never sets it: its functions talk to
# DynamoDB Local directly, through AWS_ENDPOINT_URL_DYNAMODB).
#
# Why: LocalStack 4.8.1's DynamoDB provider is a front for DynamoDB Local, which it downloads and
# starts itself on first use; offline (these machines) the download fails, so every DynamoDB call
# to LocalStack, and every AWS::DynamoDB::Table its CloudFormation engine creates, fails. The
# deploy check (infra/local/deploy_check.py) needs CloudFormation to create the template's tables,
# so this hook points the provider at the DynamoDB Local that infra/local/stack.sh already runs:
# PEC_LOCALSTACK_DYNAMODB_URL=http://127.0.0.1:<port>. LocalStack then neither downloads, starts
# nor stops a DynamoDB Local of its own; the rest of the provider (its request rewriting, the
# ddblocal -> region ARN fix-up, TTL bookkeeping) is LocalStack's own.
#
# Namespacing: LocalStack rewrites each request's access key to <account><region> before it
# forwards it, and DynamoDB Local (without -sharedDb, as stack.sh runs it) keeps one database per
# access key and region. So tables made through LocalStack (the deploy check's stack) and tables
# made directly in DynamoDB Local with the access key `test` (bootstrap.py's stacks) live side by
# side in the same process without seeing each other; read each through the endpoint that made
# it. (With -sharedDb both would share one database, and equal table names would collide.)
import logging
import os
import socket
import time
from urllib.parse import urlparse

LOG = logging.getLogger("pec.dynamodb-forward")

_URL = os.environ.get("PEC_LOCALSTACK_DYNAMODB_URL", "").strip()

if _URL:
    try:
        from localstack.services.dynamodb import server as _server

        _parsed = urlparse(_URL)
        if _parsed.scheme != "http" or not _parsed.hostname or not _parsed.port:
            raise ValueError(f"PEC_LOCALSTACK_DYNAMODB_URL must be http://host:port, not {_URL!r}")

        def _reachable(host: str, port: int) -> bool:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError:
                return False

        class ExternalDynamodbServer(_server.DynamodbServer):
            """The DynamoDB Local that stack.sh started: used, never started or stopped here."""

            def __init__(self) -> None:
                super().__init__(port=_parsed.port, host=_parsed.hostname)

            def start_dynamodb(self) -> bool:
                # stack.sh starts DynamoDB Local right after LocalStack: wait for it a little.
                deadline = time.monotonic() + 60
                while not _reachable(self.host, self.port):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"DynamoDB Local at {_URL} does not answer")
                    time.sleep(0.3)
                return True

            def stop_dynamodb(self) -> None:
                return None  # not ours to stop

            def do_start_thread(self):  # never start a second DynamoDB Local
                raise RuntimeError("pec: DynamoDB is forwarded to " + _URL)

            def is_up(self) -> bool:
                return _reachable(self.host, self.port)

        _instance = ExternalDynamodbServer()
        _server.DynamodbServer.get = staticmethod(lambda: _instance)
        LOG.info("pec: LocalStack's DynamoDB provider forwards to %s", _URL)
    except Exception:
        LOG.exception("pec: DynamoDB will not be forwarded to %s", _URL)
