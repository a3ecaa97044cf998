//! ClamAV definition updates under test (feature `clamav`): the Talos-signed `test` database and
//! a mirror on 127.0.0.1 that serves it as freshclam expects.
//!
//! - [`test_databases`]: the directory `infra/antivirus/test-databases.sh` fills from Debian's
//!   source of clamav (`test-1.cvd` .. `test-6.cvd`, `test-2.cdiff` .. `test-6.cdiff`: signed by
//!   Talos, so the real freshclam and clamd accept them; v1 and v2 hold no signature, v3 .. v6
//!   detect EICAR). A missing directory is a prerequisite failure under CI.
//! - [`Mirror`]: HTTP on a free loopback port (axum), answering `Range: bytes=a-b` with 206 (freshclam
//!   reads a database's 512-byte header that way when DNS is off), recording every request, and
//!   serving files a test can change, remove or answer with a status of its choice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;

/// The Talos-signed test databases (see the module doc): `None` (not under CI) or a panic
/// (under CI) when the script cannot provide them.
pub fn test_databases() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let found = std::process::Command::new("bash")
        .arg(root.join("infra/antivirus/test-databases.sh"))
        .output()
        .map_err(|e| format!("cannot run infra/antivirus/test-databases.sh: {e}"))
        .and_then(|out| {
            if out.status.success() {
                Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
            } else {
                Err(format!(
                    "infra/antivirus/test-databases.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        });
    crate::prereq::require("the ClamAV test databases", found)
}

/// One request the mirror answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

#[derive(Default)]
struct Files {
    files: BTreeMap<String, Vec<u8>>,
    statuses: BTreeMap<String, u16>,
    log: Vec<Request>,
}

type Shared = Arc<Mutex<Files>>;

/// A database mirror on 127.0.0.1; stopped when dropped.
pub struct Mirror {
    addr: SocketAddr,
    files: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Mirror {
    /// Starts serving `files` (name → bytes) on a free loopback port.
    pub async fn start(files: BTreeMap<String, Vec<u8>>) -> std::io::Result<Mirror> {
        let shared: Shared = Arc::new(Mutex::new(Files {
            files,
            ..Files::default()
        }));
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(serve))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Mirror {
            addr,
            files: shared,
            task,
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `bytes` as `name` from now on.
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        lock(&self.files).files.insert(name.to_string(), bytes);
    }

    /// Answers `name` with `status` (e.g. 429) from now on, whatever it holds.
    pub fn answer(&self, name: &str, status: u16) {
        lock(&self.files).statuses.insert(name.to_string(), status);
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.files).log.clone()
    }
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(files: &Shared) -> std::sync::MutexGuard<'_, Files> {
    files.lock().unwrap_or_else(|p| p.into_inner())
}

/// `bytes=a-b` or `bytes=a-` within `len`: the inclusive range.
fn range(value: &str, len: usize) -> Option<(usize, usize)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    let start: usize = start.trim().parse().ok()?;
    let end = match end.trim() {
        "" => len.checked_sub(1)?,
        e => e.parse::<usize>().ok()?.min(len.checked_sub(1)?),
    };
    (start <= end).then_some((start, end))
}

async fn serve(
    State(files): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let requested = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut files = lock(&files);
    let (status, response) = if let Some(&forced) = files.statuses.get(&name) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::from_u16(forced).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if forced == 429 {
            r.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static("3600"),
            );
        }
        (forced, r)
    } else if let Some(bytes) = files.files.get(&name) {
        let len = bytes.len();
        match requested.as_deref().and_then(|v| range(v, len)) {
            Some((start, end)) => {
                let mut r = Response::new(Body::from(bytes[start..=end].to_vec()));
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                if let Ok(v) = format!("bytes {start}-{end}/{len}").parse() {
                    r.headers_mut().insert(header::CONTENT_RANGE, v);
                }
                (206, r)
            }
            None => (200, Response::new(Body::from(bytes.clone()))),
        }
    } else {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NOT_FOUND;
        (404, r)
    };
    files.log.push(Request {
        path: format!("/{name}"),
        range: requested,
        status,
    });
    response
}

#[cfg(test)]
mod tests {
    use super::range;

    #[test]
    fn ranges() {
        assert_eq!(range("bytes=0-511", 10_000), Some((0, 511)));
        assert_eq!(range("bytes=0-511", 100), Some((0, 99)));
        assert_eq!(range("bytes=10-", 100), Some((10, 99)));
        assert_eq!(range("bytes=50-10", 100), None);
        assert_eq!(range("items=0-1", 100), None);
        assert_eq!(range("bytes=0-1", 0), None);
    }
}
