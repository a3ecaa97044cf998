//! [`SpamEngine`] over rspamd's HTTP protocol (`POST /checkv2`, the protocol of its normal
//! worker): the message is the body, the SMTP envelope goes in request headers (`From`, one
//! `Rcpt` per recipient, `User` for an authenticated submission, `Queue-Id`), and the answer is
//! JSON (`score`, `required_score`, `action`, `symbols`). Plain HTTP: rspamd listens on
//! loopback beside its caller locally, and inside the VPC in AWS (docs/antispam.md).
//!
//! Any failure (refused, timed out, a status other than 200, an answer that is not rspamd's)
//! is a [`SpamError`]: the scan step records the message as unscored and lets it go on.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pec_ports::spam::{Points, SpamEngine, SpamEnvelope, SpamError, SpamScore};
use serde::Deserialize;

/// The longest a scan may take before the message goes on unscored.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read (rspamd's answers are a few KiB).
const MAX_ANSWER: usize = 1 << 20;

/// rspamd's normal worker at `base` (`http://127.0.0.1:11333`).
#[derive(Clone)]
pub struct RspamdEngine {
    url: http::Uri,
    timeout: Duration,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl std::fmt::Debug for RspamdEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RspamdEngine")
            .field("url", &self.url)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// The part of rspamd's answer we read (the rest is ignored).
#[derive(Deserialize)]
struct Answer {
    score: f64,
    required_score: f64,
    action: String,
    #[serde(default)]
    symbols: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RspamdEngine {
    /// An engine at `base` (`http://host:port`, no path); an error names what is wrong.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let base = base.trim().trim_end_matches('/');
        if !base.starts_with("http://") {
            return Err(format!(
                "the spam engine URL {base:?} must be http://host:port (rspamd's normal worker)"
            ));
        }
        let url: http::Uri = format!("{base}/checkv2")
            .parse()
            .map_err(|e| format!("the spam engine URL {base:?} is not a URL: {e}"))?;
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(http);
        Ok(Self {
            url,
            timeout,
            client,
        })
    }

    async fn ask(&self, raw: &[u8], envelope: &SpamEnvelope) -> Result<SpamScore, String> {
        let mut req = http::Request::post(self.url.clone())
            .header("Queue-Id", header_safe(&envelope.queue_id))
            .header("From", header_safe(&envelope.reverse_path));
        for rcpt in &envelope.recipients {
            req = req.header("Rcpt", header_safe(rcpt));
        }
        if let Some(user) = &envelope.user {
            req = req.header("User", header_safe(user));
        }
        let req = req
            .body(Full::new(Bytes::copy_from_slice(raw)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(req).await.map_err(error_chain)?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        let answer: Answer =
            serde_json::from_slice(&body).map_err(|e| format!("not an rspamd answer ({e})"))?;
        let points = |v: f64, what: &str| {
            Points::new(v).ok_or_else(|| format!("rspamd's {what} {v} is not a number"))
        };
        Ok(SpamScore {
            score: points(answer.score, "score")?,
            required: points(answer.required_score, "required_score")?,
            spam: SpamScore::action_is_spam(&answer.action),
            action: answer.action,
            symbols: answer.symbols.into_keys().collect(),
        })
    }
}

impl SpamEngine for RspamdEngine {
    async fn score(&self, raw: &[u8], envelope: &SpamEnvelope) -> Result<SpamScore, SpamError> {
        match tokio::time::timeout(self.timeout, self.ask(raw, envelope)).await {
            Ok(Ok(score)) => Ok(score),
            Ok(Err(e)) => Err(SpamError(format!("rspamd at {}: {e}", self.url))),
            Err(_) => Err(SpamError(format!(
                "rspamd at {} gave no answer within {:?}",
                self.url, self.timeout
            ))),
        }
    }
}

/// A header value without control characters (an address from the network could carry any).
fn header_safe(v: &str) -> String {
    v.chars().filter(|c| !c.is_control()).collect()
}

fn error_chain(e: impl std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_urls() {
        assert!(RspamdEngine::new("https://x:1", DEFAULT_TIMEOUT).is_err());
        assert!(RspamdEngine::new("127.0.0.1:11333", DEFAULT_TIMEOUT).is_err());
        let e = RspamdEngine::new("http://127.0.0.1:11333/", DEFAULT_TIMEOUT).unwrap();
        assert_eq!(e.url.to_string(), "http://127.0.0.1:11333/checkv2");
    }

    #[tokio::test]
    async fn an_engine_that_is_down_is_an_error_not_a_verdict() {
        // A port nobody listens on (bound then dropped).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = RspamdEngine::new(&format!("http://127.0.0.1:{port}"), DEFAULT_TIMEOUT).unwrap();
        let err = e.score(b"x", &SpamEnvelope::default()).await.unwrap_err();
        assert!(err.0.contains("rspamd at"), "{err}");
    }

    #[test]
    fn header_values_lose_control_characters() {
        assert_eq!(header_safe("a\r\nb@x"), "ab@x");
    }
}
