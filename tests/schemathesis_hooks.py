"""Schemathesis hooks for the integration API's contract check (tests/pipeline.rs, api_contract).

POST /v1/messages also takes the message itself (message/rfc822): generated strings go on the
wire as text, as text/plain bodies do.
"""
import schemathesis

schemathesis.serializer.alias("message/rfc822", "text/plain")
