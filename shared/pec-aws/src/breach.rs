//! [`BreachSource`] adapters (issue #18, password protection), chosen by `PEC_BREACH_URL`:
//!
//! - `https://…` (default `https://api.pwnedpasswords.com`): the Pwned Passwords range API,
//!   `GET <base>/range/<PREFIX>` with `Add-Padding: true` (the answer's size says nothing of the
//!   prefix) and a descriptive `User-Agent` (the API refuses requests without one). `http://`
//!   is accepted for a local stand-in. Only the 5-hex-digit prefix is ever sent.
//! - `file:///path`: a local copy of the list, as `PwnedPasswordsDownloader` writes it: one file
//!   of `<40 hex SHA-1>:<count>` lines, or a directory of `<PREFIX>.txt` range files (a missing
//!   range file is an error: a partial copy never passes a password as clean). The local stack
//!   and the tests use a small file of this shape.
//!
//! Anything but a 200 with a body, within [`DEFAULT_TIMEOUT`], is [`BreachError::Unavailable`]:
//! the caller fails closed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use pec_ports::breach::{BreachError, BreachSource, RangeFuture};

/// The production range API.
pub const DEFAULT_URL: &str = "https://api.pwnedpasswords.com";
/// The longest a range fetch may take (a person is waiting for the answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest answer read (a padded range is about 40 KiB).
const MAX_ANSWER: usize = 1 << 20;

/// The source `url` names (see the module documentation); an error says what is wrong.
pub fn breach_source(url: &str) -> Result<Arc<dyn BreachSource>, String> {
    let url = url.trim();
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err("PEC_BREACH_URL file:// names no path".into());
        }
        return Ok(Arc::new(FileBreach { path: path.into() }));
    }
    Ok(Arc::new(HttpsBreach::new(url, DEFAULT_TIMEOUT)?))
}

/// The Pwned Passwords range API at a base URL.
#[derive(Clone)]
pub struct HttpsBreach {
    base: String,
    timeout: Duration,
    client: hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    >,
}

impl std::fmt::Debug for HttpsBreach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsBreach")
            .field("base", &self.base)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl HttpsBreach {
    /// The API at `base` (`https://host[:port][/path]`, or `http://` for a local stand-in).
    pub fn new(base: &str, timeout: Duration) -> Result<Self, String> {
        let base = base.trim().trim_end_matches('/').to_string();
        let plain = base.starts_with("http://");
        if !plain && !base.starts_with("https://") {
            return Err(format!(
                "PEC_BREACH_URL {base:?} is neither https://, http:// nor file://"
            ));
        }
        format!("{base}/range/00000")
            .parse::<http::Uri>()
            .map_err(|e| format!("PEC_BREACH_URL {base:?} is not a URL: {e}"))?;
        let client = crate::webhooks::https_client(
            hyper_util::client::legacy::connect::HttpConnector::new(),
            Duration::from_secs(3),
            plain,
        )
        .map_err(|e| format!("no TLS roots: {e}"))?;
        Ok(HttpsBreach {
            base,
            timeout,
            client,
        })
    }

    async fn fetch(&self, prefix: &str) -> Result<String, String> {
        let req = http::Request::get(format!("{}/range/{prefix}", self.base))
            .header("Add-Padding", "true")
            .header(
                "User-Agent",
                concat!("pec-provider/", env!("CARGO_PKG_VERSION")),
            )
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| crate::store::aws_error_chain(&e))?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        if status != http::StatusCode::OK {
            return Err(format!(
                "HTTP {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ));
        }
        String::from_utf8(body.to_vec()).map_err(|_| "the answer is not text".to_string())
    }
}

impl BreachSource for HttpsBreach {
    fn range<'a>(&'a self, prefix: &'a str) -> RangeFuture<'a> {
        Box::pin(async move {
            if !valid_prefix(prefix) {
                return Err(BreachError::Unavailable(format!(
                    "{prefix:?} is not a range prefix"
                )));
            }
            match tokio::time::timeout(self.timeout, self.fetch(prefix)).await {
                Ok(Ok(body)) => Ok(body),
                Ok(Err(e)) => Err(BreachError::Unavailable(format!("{}: {e}", self.base))),
                Err(_) => Err(BreachError::Unavailable(format!(
                    "{} gave no answer within {:?}",
                    self.base, self.timeout
                ))),
            }
        })
    }
}

/// A local copy of the list (a file of full hashes, or a directory of range files).
#[derive(Debug, Clone)]
pub struct FileBreach {
    path: std::path::PathBuf,
}

impl FileBreach {
    pub fn new(path: impl Into<std::path::PathBuf>) -> Self {
        FileBreach { path: path.into() }
    }

    fn read(&self, prefix: &str) -> Result<String, String> {
        use std::io::BufRead;
        let shown = self.path.display();
        // A directory of ranges: byte for byte what the API answers.
        if self.path.is_dir() {
            let file = self.path.join(format!("{prefix}.txt"));
            // Every prefix has a file in a whole copy: a missing one is a partial copy, and
            // a check against it must not pass a password as clean.
            return std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()));
        }
        let file = std::fs::File::open(&self.path).map_err(|e| format!("{shown}: {e}"))?;
        // Every line of the prefix, the prefix cut off; the padding line keeps the answer a
        // range when the copy has none of them.
        let mut body = String::from(PADDING);
        for line in std::io::BufReader::new(file).lines() {
            let line = line.map_err(|e| format!("{shown}: {e}"))?;
            let line = line.trim();
            if line.len() > prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix) {
                body.push_str(&line[prefix.len()..]);
                body.push_str("\r\n");
            }
        }
        Ok(body)
    }
}

/// A padding entry: a range with nothing in it.
const PADDING: &str = "00000000000000000000000000000000000:0\r\n";

impl BreachSource for FileBreach {
    fn range<'a>(&'a self, prefix: &'a str) -> RangeFuture<'a> {
        Box::pin(async move {
            if !valid_prefix(prefix) {
                return Err(BreachError::Unavailable(format!(
                    "{prefix:?} is not a range prefix"
                )));
            }
            let this = self.clone();
            let prefix = prefix.to_ascii_uppercase();
            let read = tokio::task::spawn_blocking(move || this.read(&prefix));
            // A whole list in one file is tens of GB: a scan that takes too long is no answer.
            match tokio::time::timeout(DEFAULT_TIMEOUT, read).await {
                Ok(Ok(result)) => result.map_err(BreachError::Unavailable),
                Ok(Err(e)) => Err(BreachError::Unavailable(e.to_string())),
                Err(_) => Err(BreachError::Unavailable(format!(
                    "{} gave no answer within {:?}",
                    self.path.display(),
                    DEFAULT_TIMEOUT
                ))),
            }
        })
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix.len() == pec_core::breach::PREFIX_LEN && prefix.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pec_ports::breach::breach_count;

    #[tokio::test]
    async fn a_full_hash_file_answers_by_range() {
        let dir = std::env::temp_dir().join(format!("pec-breach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pwned.txt");
        std::fs::write(
            &file,
            "5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:10437277\n\
             5baa6ffffffffffffffffffffffffffffffffff0:3\n",
        )
        .unwrap();
        let src = breach_source(&format!("file://{}", file.display())).unwrap();
        assert_eq!(breach_count(&*src, "password").await.unwrap(), 10437277);
        assert_eq!(
            breach_count(&*src, "not in the file, 2026").await.unwrap(),
            0
        );
        let missing = breach_source("file:///nonexistent/pwned.txt").unwrap();
        assert!(matches!(
            breach_count(&*missing, "password").await,
            Err(BreachError::Unavailable(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_api_that_is_down_is_unavailable_not_clean() {
        assert!(breach_source("ftp://x").is_err());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let src = breach_source(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(matches!(
            breach_count(&*src, "password").await,
            Err(BreachError::Unavailable(_))
        ));
    }

    #[tokio::test]
    async fn the_api_is_asked_for_the_prefix_only_with_padding() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).to_string();
            let body =
                "1E4C9B93F3F0682250B6CF8331B7EE68FD8:42\r\n0018A45C4D1DEF81644B54AB7F969B88D65:0";
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            sock.write_all(answer.as_bytes()).await.unwrap();
            request
        });
        let src = breach_source(&format!("http://127.0.0.1:{port}/")).unwrap();
        assert_eq!(breach_count(&*src, "password").await.unwrap(), 42);
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("get /range/5baa6 http/1.1"),
            "{request}"
        );
        assert!(request.contains("add-padding: true"), "{request}");
        assert!(request.contains("user-agent: pec-provider/"), "{request}");
        assert!(!request.contains("1e4c9b"), "{request}");
    }
}
