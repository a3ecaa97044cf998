//! Engine 1: ClamAV through clamd, INSTREAM over a unix socket (clamav-client). libclamav is
//! not linked: clamd is a separate process (locally `infra/local/clamd.sh`; in AWS started by
//! the scan function from its layer, see ARCHITECTURE.md).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clamav_client::tokio::Socket;

use crate::engine::{BoxFuture, Detection, Engine, EngineError};
use crate::item::Item;

const NAME: &str = "clamav";

/// ClamAV as an [`Engine`]: one INSTREAM connection per item.
#[derive(Debug, Clone)]
pub struct ClamdEngine {
    socket: PathBuf,
    call_timeout: Duration,
    chunk_size: usize,
}

impl ClamdEngine {
    /// clamd on the unix socket `socket`, 30 s per call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            call_timeout: Duration::from_secs(30),
            chunk_size: 1024 * 1024,
        }
    }

    /// Per-call timeout (one item): past it the engine is considered failing.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// PING → PONG, within the call timeout.
    pub async fn ping(&self) -> Result<(), EngineError> {
        let call = clamav_client::tokio::ping(Socket {
            socket_path: &self.socket,
        });
        let answer = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(e)) => return Err(self.io_error(&e)),
            Ok(Ok(answer)) => answer,
        };
        if trim_reply(&answer) == b"PONG" {
            Ok(())
        } else {
            Err(failed(format!(
                "unexpected answer to PING: {:?}",
                String::from_utf8_lossy(&answer)
            )))
        }
    }

    /// `RELOAD`: clamd re-reads its database directory (answer `RELOADING`; while it loads,
    /// with `ConcurrentDatabaseReload no`, it answers nothing).
    pub async fn reload(&self) -> Result<(), EngineError> {
        let call = clamav_client::tokio::reload(Socket {
            socket_path: &self.socket,
        });
        let answer = match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => return Err(self.timeout()),
            Ok(Err(e)) => return Err(self.io_error(&e)),
            Ok(Ok(answer)) => answer,
        };
        if trim_reply(&answer) == b"RELOADING" {
            Ok(())
        } else {
            Err(failed(format!(
                "unexpected answer to RELOAD: {:?}",
                String::from_utf8_lossy(&answer)
            )))
        }
    }

    /// clamd's version line (`ClamAV 1.4.6/...`).
    pub async fn version(&self) -> Result<String, EngineError> {
        let call = clamav_client::tokio::get_version(Socket {
            socket_path: &self.socket,
        });
        match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => Err(self.timeout()),
            Ok(Err(e)) => Err(self.io_error(&e)),
            Ok(Ok(answer)) => Ok(String::from_utf8_lossy(trim_reply(&answer)).into_owned()),
        }
    }

    fn timeout(&self) -> EngineError {
        EngineError::Timeout {
            engine: NAME.into(),
            timeout_ms: u64::try_from(self.call_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn io_error(&self, e: &std::io::Error) -> EngineError {
        let detail = format!("{}: {e}", self.socket.display());
        match e.kind() {
            ErrorKind::NotFound | ErrorKind::ConnectionRefused | ErrorKind::PermissionDenied => {
                EngineError::Unavailable {
                    engine: NAME.into(),
                    detail,
                }
            }
            _ => failed(detail),
        }
    }

    async fn scan_one(
        &self,
        data: &[u8],
        deadline: Instant,
    ) -> Result<Option<String>, EngineError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(EngineError::DeadlineExceeded);
        }
        let limit = self.call_timeout.min(remaining);
        let call = clamav_client::tokio::scan_buffer(
            data,
            Socket {
                socket_path: &self.socket,
            },
            Some(self.chunk_size),
        );
        match tokio::time::timeout(limit, call).await {
            Err(_) if limit < self.call_timeout => Err(EngineError::DeadlineExceeded),
            Err(_) => Err(self.timeout()),
            Ok(Err(e)) => Err(self.io_error(&e)),
            Ok(Ok(reply)) => parse_reply(&reply),
        }
    }
}

fn failed(detail: String) -> EngineError {
    EngineError::Failed {
        engine: NAME.into(),
        detail,
    }
}

fn trim_reply(reply: &[u8]) -> &[u8] {
    let mut end = reply.len();
    while end > 0 && matches!(reply.get(end - 1), Some(b'\0' | b'\n' | b'\r')) {
        end -= 1;
    }
    reply.get(..end).unwrap_or_default()
}

/// clamd's INSTREAM answer: `stream: OK`, `stream: <signature> FOUND`, or `... ERROR`.
fn parse_reply(reply: &[u8]) -> Result<Option<String>, EngineError> {
    let text = String::from_utf8_lossy(trim_reply(reply)).into_owned();
    let body = text.strip_prefix("stream: ").unwrap_or(&text);
    if body == "OK" {
        Ok(None)
    } else if let Some(signature) = body.strip_suffix(" FOUND") {
        Ok(Some(signature.trim().to_string()))
    } else if body.ends_with(" ERROR") {
        Err(failed(format!("clamd answered: {body}")))
    } else {
        Err(failed(format!("unexpected clamd answer: {text:?}")))
    }
}

impl Engine for ClamdEngine {
    fn name(&self) -> &str {
        NAME
    }

    fn scan<'a>(
        &'a self,
        items: &'a [Arc<Item>],
        deadline: Instant,
    ) -> BoxFuture<'a, Result<Option<Detection>, EngineError>> {
        Box::pin(async move {
            for (index, item) in items.iter().enumerate() {
                if let Some(signature) = self.scan_one(&item.data, deadline).await? {
                    return Ok(Some(Detection { index, signature }));
                }
            }
            Ok(None)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply(b"stream: OK\0"), Ok(None));
        assert_eq!(
            parse_reply(b"stream: Eicar-Test-Signature FOUND\0"),
            Ok(Some("Eicar-Test-Signature".into()))
        );
        assert!(matches!(
            parse_reply(b"INSTREAM size limit exceeded. ERROR\0"),
            Err(EngineError::Failed { .. })
        ));
        assert!(matches!(parse_reply(b""), Err(EngineError::Failed { .. })));
    }

    #[tokio::test]
    async fn a_missing_socket_is_unavailable_not_clean() {
        let dir = std::env::temp_dir().join(format!("pec-scan-no-clamd-{}", std::process::id()));
        let engine = ClamdEngine::new(dir.join("clamd.sock"));
        let item = Arc::new(Item {
            path: crate::PartPath::root(),
            content_type: String::new(),
            filename: String::new(),
            in_archive: false,
            depth: 0,
            data: b"hello".to_vec(),
        });
        let result = engine
            .scan(&[item], Instant::now() + Duration::from_secs(5))
            .await;
        assert!(
            matches!(result, Err(EngineError::Unavailable { .. })),
            "{result:?}"
        );
        assert!(matches!(
            engine.ping().await,
            Err(EngineError::Unavailable { .. })
        ));
    }
}
