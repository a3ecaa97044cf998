//! Outgoing messages behind small traits: queue sends (a step handing work to the next),
//! integration events, and mail to other domains (the outbound relay). The AWS adapters are
//! `pec_aws::{SqsSender, EventBridgePublisher, SesTransport}`; [`MemoryOutbox`] records what was
//! sent (tests).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use pec_core::events::PecEvent;

/// A send or publish failed.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} to {target}: {message}")]
pub struct SendError {
    pub operation: &'static str,
    pub target: String,
    pub message: String,
    /// Sending the same thing again cannot succeed (the bytes cannot travel unchanged, a bad
    /// sender, the service rejected the message itself): a local problem for an operator, never
    /// a reason to wait and retry.
    pub permanent: bool,
}

/// Sends a message body to a queue.
pub trait QueueSender: Send + Sync {
    fn send(
        &self,
        queue_url: &str,
        body: String,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
    /// Sends a message that becomes visible after `delay_seconds` (at most 900, SQS's limit).
    fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        delay_seconds: u32,
    ) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Publishes integration events.
pub trait EventPublisher: Send + Sync {
    fn publish(&self, event: &PecEvent) -> impl Future<Output = Result<(), SendError>> + Send;
}

/// Records sends and events in memory (unit tests).
#[derive(Default)]
pub struct MemoryOutbox {
    sent: Mutex<Vec<(String, String)>>,
    events: Mutex<Vec<PecEvent>>,
    mail: Mutex<Vec<SentMail>>,
    /// Scripted replies per recipient (lowercase), used in order by `send_each`.
    replies: Mutex<HashMap<String, VecDeque<RecipientReply>>>,
    /// Scripted failures of the next `send_each` calls, in order.
    failures: Mutex<VecDeque<SendError>>,
}

impl MemoryOutbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent: (queue url, body).
    pub fn sent(&self) -> Vec<(String, String)> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Removes and returns what was sent to `queue_url`.
    pub fn take(&self, queue_url: &str) -> Vec<String> {
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        let (mine, rest): (Vec<_>, Vec<_>) = sent.drain(..).partition(|(q, _)| q == queue_url);
        *sent = rest;
        mine.into_iter().map(|(_, b)| b).collect()
    }

    /// Every event published.
    pub fn events(&self) -> Vec<PecEvent> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl QueueSender for MemoryOutbox {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), SendError> {
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((queue_url.to_string(), body));
        Ok(())
    }
    /// Recorded like [`QueueSender::send`] (the delay is not kept).
    async fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        _delay: u32,
    ) -> Result<(), SendError> {
        self.send(queue_url, body).await
    }
}

impl EventPublisher for MemoryOutbox {
    async fn publish(&self, event: &PecEvent) -> Result<(), SendError> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event.clone());
        Ok(())
    }
}

impl<T: QueueSender> QueueSender for &T {
    async fn send(&self, queue_url: &str, body: String) -> Result<(), SendError> {
        (*self).send(queue_url, body).await
    }
    async fn send_delayed(
        &self,
        queue_url: &str,
        body: String,
        delay: u32,
    ) -> Result<(), SendError> {
        (*self).send_delayed(queue_url, body, delay).await
    }
}

impl<T: EventPublisher> EventPublisher for &T {
    async fn publish(&self, event: &PecEvent) -> Result<(), SendError> {
        (*self).publish(event).await
    }
}

/// Who receives a relayed message, which decides how its connection must be protected
/// ([`MailTransport::send_each`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// Another PEC provider (a domain in the provider index), or a receipt to a sender at one:
    /// with the SMTP relay, TLS with a verified certificate or nothing is sent, whatever the
    /// deployment configures. SES (`PEC_RELAY=ses`) ignores it: SES decides TLS itself
    /// (opportunistic without a configuration set requiring it; the template has none yet).
    Provider,
    /// An ordinary (non-PEC) mail domain: the transport's configured policy for those.
    Ordinary,
}

/// Sends a message to other mail domains (the outbound relay): SES in AWS, or an SMTP relay to
/// the recipients' MX (`pec_relay`). SES replaces `Message-ID` and `Date` of what it sends:
/// correlation relies on the daticert identificativo and `X-Riferimento-Message-ID`, never on
/// them.
pub trait MailTransport: Send + Sync {
    /// Sends `raw` from `source` to `destinations`; the transport's message id.
    fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> impl Future<Output = Result<String, SendError>> + Send;

    /// Sends `raw` from `source` to `destinations` (all in one domain) and says what became of
    /// each recipient: the relay of the deliver step. `Err` when nothing could be decided for
    /// any of them (the whole message is to be sent again later).
    ///
    /// The default is for transports without per-recipient answers (SES): [`Self::send_raw`],
    /// and every recipient [`RecipientReply::Accepted`].
    fn send_each(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
        peer: Peer,
    ) -> impl Future<Output = Result<SendReport, SendError>> + Send {
        let _ = peer; // SES decides TLS itself (see Peer::Provider).
        async move {
            let id = self.send_raw(source, destinations, raw).await?;
            Ok(SendReport::all_accepted(id, destinations))
        }
    }
}

/// What the receiving side answered for one recipient ([`MailTransport::send_each`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientReply {
    /// Taken.
    Accepted,
    /// Not now (a 4xx reply): send it again later.
    Deferred {
        /// The reply (code, enhanced code and text).
        text: String,
    },
    /// Refused for good: a 5xx reply, or a domain that takes no mail (no such domain, null MX).
    Refused(Refusal),
}

/// A refusal for good of one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The basic reply code (`550`); for a domain found not to take mail before any session
    /// (DNS), the code an MX would give.
    pub code: u16,
    /// The enhanced status code (RFC 3463, `5.1.1`), when there is one.
    pub enhanced: Option<String>,
    /// The reply text (the enhanced code first when the reply had one). Remote text: never
    /// trusted, cleaned before any use in a message.
    pub text: String,
    /// Refused at `RCPT` for this recipient alone; `false` when the whole message was refused
    /// (the domain, `MAIL`, `DATA`).
    pub at_rcpt: bool,
}

/// What [`MailTransport::send_each`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// The transport's id of what it sent (for the log; empty when nothing was taken).
    pub id: String,
    /// Each destination with its reply, in the order given.
    pub recipients: Vec<(String, RecipientReply)>,
}

impl SendReport {
    /// Every destination taken (transports without per-recipient answers).
    pub fn all_accepted(id: String, destinations: &[String]) -> SendReport {
        SendReport {
            id,
            recipients: destinations
                .iter()
                .map(|d| (d.clone(), RecipientReply::Accepted))
                .collect(),
        }
    }
}

/// The enhanced status code (RFC 3463 `class.subject.detail`, e.g. `5.1.1`) that starts an SMTP
/// reply text, if it starts with one.
pub fn enhanced_status(text: &str) -> Option<&str> {
    let code = text.split_whitespace().next()?;
    let mut parts = code.split('.');
    let (Some(class), Some(subject), Some(detail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let digits = |s: &str, max: usize| {
        !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit())
    };
    (matches!(class, "2" | "4" | "5") && digits(subject, 3) && digits(detail, 3)).then_some(code)
}

/// One message handed to a [`MemoryOutbox`] transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    pub source: String,
    pub destinations: Vec<String>,
    pub raw: Vec<u8>,
    /// Who it was for, when sent with [`MailTransport::send_each`].
    pub peer: Option<Peer>,
}

impl MemoryOutbox {
    /// Removes and returns the mail sent through the transport.
    pub fn take_mail(&self) -> Vec<SentMail> {
        std::mem::take(&mut *self.mail.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Scripts the transport's next answer for `recipient` (tests): each
    /// [`MailTransport::send_each`] that names it uses the next scripted reply, then
    /// The next [`MailTransport::send_each`] fails with `error` (sends nothing).
    pub fn fail_next_send(&self, error: SendError) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(error);
    }

    /// [`RecipientReply::Accepted`] once the script is used up.
    pub fn reply_to(&self, recipient: &str, reply: RecipientReply) {
        self.replies
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(recipient.trim().to_ascii_lowercase())
            .or_default()
            .push_back(reply);
    }
}

impl MailTransport for MemoryOutbox {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, SendError> {
        let mut mail = self.mail.lock().unwrap_or_else(|p| p.into_inner());
        mail.push(SentMail {
            source: source.to_string(),
            destinations: destinations.to_vec(),
            raw: raw.to_vec(),
            peer: None,
        });
        Ok(format!("memory-{}", mail.len()))
    }

    /// Records the mail as [`MailTransport::send_raw`] does (every destination handed over),
    /// and answers each recipient as scripted by [`MemoryOutbox::reply_to`] (default: taken).
    async fn send_each(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
        peer: Peer,
    ) -> Result<SendReport, SendError> {
        if let Some(e) = self
            .failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
        {
            return Err(e);
        }
        let id = self.send_raw(source, destinations, raw).await?;
        if let Some(m) = self
            .mail
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last_mut()
        {
            m.peer = Some(peer);
        }
        let mut replies = self.replies.lock().unwrap_or_else(|p| p.into_inner());
        let recipients = destinations
            .iter()
            .map(|d| {
                let reply = replies
                    .get_mut(&d.trim().to_ascii_lowercase())
                    .and_then(VecDeque::pop_front)
                    .unwrap_or(RecipientReply::Accepted);
                (d.clone(), reply)
            })
            .collect();
        Ok(SendReport { id, recipients })
    }
}

impl<T: MailTransport> MailTransport for &T {
    async fn send_raw(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
    ) -> Result<String, SendError> {
        (*self).send_raw(source, destinations, raw).await
    }
    async fn send_each(
        &self,
        source: &str,
        destinations: &[String],
        raw: &[u8],
        peer: Peer,
    ) -> Result<SendReport, SendError> {
        (*self).send_each(source, destinations, raw, peer).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enhanced_status_codes() {
        assert_eq!(enhanced_status("5.1.1 <x@y>: no such user"), Some("5.1.1"));
        assert_eq!(enhanced_status("  4.7.1 greylisted"), Some("4.7.1"));
        assert_eq!(enhanced_status("5.1.10 null MX"), Some("5.1.10"));
        assert_eq!(enhanced_status("5.1.1"), Some("5.1.1"));
        for none in [
            "",
            "550 no",
            "5.1 x",
            "5.1.1.1 x",
            "3.1.1 x",
            "5.a.1 x",
            "5.1.1234 x",
        ] {
            assert_eq!(enhanced_status(none), None, "{none:?}");
        }
    }

    #[tokio::test]
    async fn the_memory_transport_answers_as_scripted() {
        let o = MemoryOutbox::new();
        let refused = RecipientReply::Refused(Refusal {
            code: 550,
            enhanced: Some("5.1.1".into()),
            text: "5.1.1 no such user".into(),
            at_rcpt: true,
        });
        o.reply_to("B@x.test", refused.clone());
        let to = vec!["a@x.test".to_string(), "b@x.test".to_string()];
        let r = o
            .send_each("s@y.test", &to, b"m", Peer::Provider)
            .await
            .unwrap();
        assert_eq!(
            r.recipients,
            vec![
                ("a@x.test".to_string(), RecipientReply::Accepted),
                ("b@x.test".to_string(), refused)
            ]
        );
        // The script is used up: taken the next time.
        let r = o
            .send_each("s@y.test", &to[1..], b"m", Peer::Ordinary)
            .await
            .unwrap();
        assert_eq!(r.recipients[0].1, RecipientReply::Accepted);
        assert_eq!(o.take_mail().len(), 2);
    }
}
