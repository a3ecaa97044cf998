# LocalStack init hook (run in LocalStack's own process at start; infra/local/stack.sh installs it
# under $FILESYSTEM_ROOT/etc/localstack/init/start.d/). LocalStack 4.8.1 keeps every mail sent
# through SES v1 SendRawEmail for GET /_aws/ses, but not its Destinations (the SMTP envelope):
# for raw mail it stores only Id, Region, Source, RawData and Timestamp. pec-exchange, which plays
# the Internet between the local providers, needs the envelope to deliver a message only to the
# recipients it was sent to (a provider sends one SendRawEmail per recipient domain, each with the
# same headers). This hook records the Destinations as given, in the same record, as
# "Destination": {"ToAddresses": [...]} (the field LocalStack already uses for SendEmail).
# Nothing else changes: the send, its checks and its answer are LocalStack's own.
import logging

LOG = logging.getLogger("pec.ses-envelope")

try:
    from localstack.services.ses import provider as _ses

    _original = _ses.SesProvider.send_raw_email

    def _send_raw_email_recording_destinations(self, context, raw_message, source=None,
                                               destinations=None, *args, **kwargs):
        # Moto appends the header addresses to the list it is given: keep a copy of the envelope.
        envelope = list(destinations or [])
        response = _original(self, context, raw_message, source, destinations, *args, **kwargs)
        try:
            record = _ses.EMAILS.get(response["MessageId"])
            if record is not None and envelope:
                record["Destination"] = {"ToAddresses": envelope}
        except Exception:  # never fail a send because of this bookkeeping
            LOG.exception("pec: could not record the SendRawEmail destinations")
        return response

    _ses.SesProvider.send_raw_email = _send_raw_email_recording_destinations
    LOG.info("pec: SendRawEmail destinations are recorded in /_aws/ses")
except Exception:
    LOG.exception("pec: SendRawEmail destinations will not be recorded")
