//! LocalStack's sent-mail store: every message sent through SES v1 (`SendRawEmail`), read with
//! `GET /_aws/ses` and consumed with `DELETE /_aws/ses?id=<id>`. The store holds, per message,
//! `Id`, `Region`, `Source`, `RawData` (the raw message as text: LocalStack refuses raw mail
//! that is not UTF-8) and `Timestamp` (UTC, seconds, no zone); the SMTP envelope
//! (`Destinations`) only when infra/local/stack.sh's init hook recorded it, as
//! `Destination.ToAddresses`.
//!
//! A tiny HTTP/1.0 client over a TCP stream is enough here (one request per connection, the
//! whole request in one write: LocalStack sniffs the first segment for TLS).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, NaiveDateTime, Utc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// LocalStack's address, from `AWS_ENDPOINT_URL` (`http://host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        let rest = url.trim().strip_prefix("http://").with_context(|| {
            format!("{url:?}: only http:// endpoints (LocalStack) are supported")
        })?;
        let authority = rest.split('/').next().unwrap_or_default();
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .with_context(|| format!("{url:?}: bad port {p:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            bail!("{url:?} has no host");
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
        })
    }

    /// From the environment the SDK uses (`AWS_ENDPOINT_URL`).
    pub fn from_env() -> Result<Endpoint> {
        let url = std::env::var("AWS_ENDPOINT_URL").context(
            "AWS_ENDPOINT_URL is not set: export the stack's environment (eval \"$(infra/local/stack.sh env)\")",
        )?;
        Endpoint::parse(&url)
    }
}

/// A response: status code and body.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Splits a raw HTTP/1.x response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            } else if name.eq_ignore_ascii_case("content-length") {
                length = value.parse::<usize>().ok();
            }
        }
    }
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)?
    } else {
        match length {
            Some(n) if n > body.len() => bail!("truncated body: {} of {n} bytes", body.len()),
            Some(n) => body[..n].to_vec(),
            None => body.to_vec(),
        }
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One HTTP/1.0 request (no body) to LocalStack.
pub async fn request(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<Response> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .with_context(|| format!("connecting to {}:{}", endpoint.host, endpoint.port))?;
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\n\r\n",
            endpoint.host, endpoint.port
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        parse_response(&raw)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{method} {path}: no answer within {} s", timeout.as_secs()))?
        .with_context(|| format!("{method} {path}"))
}

/// A message as LocalStack's SES kept it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMail {
    pub id: String,
    pub region: String,
    pub source: String,
    pub raw: Vec<u8>,
    /// When SES accepted it (UTC).
    pub sent_at: DateTime<Utc>,
    /// The SendRawEmail Destinations, if recorded (`None`: not recorded, see the module doc).
    pub destinations: Option<Vec<String>>,
}

/// A store entry that is not a usable message (reported, never delivered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unusable {
    pub id: Option<String>,
    pub reason: String,
}

/// Reads the JSON of `GET /_aws/ses`: `{"messages": [...]}`.
pub fn parse_store(json: &[u8]) -> Result<Vec<std::result::Result<SentMail, Unusable>>> {
    let v: serde_json::Value =
        serde_json::from_slice(json).context("the /_aws/ses answer is not JSON")?;
    let messages = v["messages"]
        .as_array()
        .context("the /_aws/ses answer has no \"messages\" list")?;
    Ok(messages.iter().map(parse_message).collect())
}

fn parse_message(m: &serde_json::Value) -> std::result::Result<SentMail, Unusable> {
    let id = m["Id"].as_str().map(str::to_string);
    let fail = |reason: &str| Unusable {
        id: id.clone(),
        reason: reason.to_string(),
    };
    let Some(id_text) = id.clone().filter(|i| !i.is_empty()) else {
        return Err(fail("no Id"));
    };
    let raw = m["RawData"]
        .as_str()
        .ok_or_else(|| fail("no RawData (not a raw message)"))?;
    let source = m["Source"]
        .as_str()
        .ok_or_else(|| fail("no Source"))?
        .to_string();
    let sent_at = m["Timestamp"]
        .as_str()
        .and_then(parse_timestamp)
        .ok_or_else(|| fail("no usable Timestamp"))?;
    let destinations = m["Destination"].as_object().map(|d| {
        ["ToAddresses", "CcAddresses", "BccAddresses"]
            .iter()
            .flat_map(|k| d.get(*k).and_then(|v| v.as_array()).into_iter().flatten())
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect::<Vec<_>>()
    });
    Ok(SentMail {
        id: id_text,
        region: m["Region"]
            .as_str()
            .filter(|r| !r.is_empty())
            .unwrap_or("eu-south-1")
            .to_string(),
        source,
        raw: raw.as_bytes().to_vec(),
        sent_at,
        destinations: destinations.filter(|d| !d.is_empty()),
    })
}

/// LocalStack's `2026-11-23T04:12:38` (UTC, no zone), or any RFC 3339 time.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|n| n.and_utc())
}

/// Every message in the store.
pub async fn sent_mail(
    endpoint: &Endpoint,
    timeout: Duration,
) -> Result<Vec<std::result::Result<SentMail, Unusable>>> {
    let response = request(endpoint, "GET", "/_aws/ses", timeout).await?;
    if response.status != 200 {
        bail!("GET /_aws/ses: HTTP {}", response.status);
    }
    parse_store(&response.body)
}

/// Removes one message from the store (`DELETE /_aws/ses?id=`); `false` if it was not there
/// (LocalStack 4.8.1 answers 500 for an unknown id).
pub async fn consume(endpoint: &Endpoint, id: &str, timeout: Duration) -> Result<bool> {
    let encoded: String = id
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let response = request(
        endpoint,
        "DELETE",
        &format!("/_aws/ses?id={encoded}"),
        timeout,
    )
    .await?;
    Ok((200..300).contains(&response.status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            Endpoint::parse("http://127.0.0.1:4566").unwrap(),
            Endpoint {
                host: "127.0.0.1".into(),
                port: 4566
            }
        );
        assert_eq!(Endpoint::parse("http://localhost/").unwrap().port, 80);
        assert!(Endpoint::parse("https://s3.amazonaws.com").is_err());
        assert!(Endpoint::parse("http://:1").is_err());
        assert!(Endpoint::parse("http://h:x").is_err());
    }

    #[test]
    fn responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}extra").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = parse_response(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        for bad in [
            &b""[..],
            b"HTTP/1.1 200",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab",
        ] {
            assert!(parse_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_entries() {
        let json = br#"{"messages": [
          {"Id": "a-b", "Region": "eu-south-1", "Source": "posta-certificata@pec.example.test",
           "RawData": "From: x\r\n\r\nb\u00e8\r\n", "Timestamp": "2026-11-23T04:12:38",
           "Destination": {"ToAddresses": ["anna@pec.altro.test"]}},
          {"Id": "c", "Source": "s@x.it", "RawData": "x", "Timestamp": "2026-11-23T04:12:39.5Z"},
          {"Id": "d", "Source": "s@x.it", "Subject": "templated", "Timestamp": "2026-11-23T04:12:39"},
          {"Source": "s@x.it", "RawData": "x", "Timestamp": "2026-11-23T04:12:39"},
          {"Id": "e", "Source": "s@x.it", "RawData": "x", "Timestamp": "yesterday"},
          "not an object"
        ]}"#;
        let entries = parse_store(json).unwrap();
        let first = entries[0].as_ref().unwrap();
        assert_eq!(first.raw, "From: x\r\n\r\nbè\r\n".as_bytes());
        assert_eq!(
            first.destinations.as_deref(),
            Some(&["anna@pec.altro.test".to_string()][..])
        );
        assert_eq!(first.sent_at.to_rfc3339(), "2026-11-23T04:12:38+00:00");
        let second = entries[1].as_ref().unwrap();
        assert_eq!(second.destinations, None);
        assert_eq!(second.region, "eu-south-1");
        assert!(entries[2..].iter().all(|e| e.is_err()));
        assert_eq!(entries[2].as_ref().unwrap_err().id.as_deref(), Some("d"));
        assert!(parse_store(b"{}").is_err());
        assert!(parse_store(b"[").is_err());
    }
}
