//! The raw line client the SMTP tests share: plain TCP, then tokio-rustls after STARTTLS; one
//! line out, one (possibly multi-line) reply in, exact codes asserted.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use pec_submit::dev_tls::DevTls;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Bound on every wait for the server in these tests.
pub const WAIT: Duration = Duration::from_secs(20);

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub struct Raw {
    pub io: BufReader<Box<dyn Io>>,
}

#[derive(Debug)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

impl Raw {
    /// Connects and reads the greeting, which must be `220` and name `host`.
    pub async fn connect(addr: SocketAddr, host: &str) -> Self {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut c = Raw {
            io: BufReader::new(Box::new(tcp)),
        };
        let greeting = c.reply().await.expect("greeting");
        assert_eq!(greeting.code, 220, "{greeting:?}");
        assert!(greeting.text.contains(host), "{greeting:?}");
        c
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// The next reply, or `None` at end of stream.
    pub async fn reply(&mut self) -> Option<Reply> {
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            let n = tokio::time::timeout(WAIT, self.io.read_until(b'\n', &mut line))
                .await
                .expect("the server answers in time")
                .unwrap_or(0);
            if n == 0 {
                assert!(text.is_empty(), "reply cut short: {text:?}");
                return None;
            }
            let line = String::from_utf8(line).expect("replies are UTF-8");
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            assert!(line.len() >= 5, "short reply line {line:?}");
            text.push_str(&line);
            if line.as_bytes()[3] == b' ' {
                let code = line[..3].parse().expect("numeric reply code");
                return Some(Reply { code, text });
            }
            assert_eq!(line.as_bytes()[3], b'-', "bad reply line {line:?}");
        }
    }

    pub async fn cmd(&mut self, line: &str) -> Reply {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.reply()
            .await
            .unwrap_or_else(|| panic!("no reply to {line:?}"))
    }

    pub async fn expect(&mut self, line: &str, code: u16) -> Reply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "{line:?} → {r:?}");
        r
    }

    /// True if the server closed the connection (after any replies still to read).
    pub async fn closed(&mut self) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(WAIT, self.io.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    pub async fn starttls(mut self, tls: &DevTls) -> Raw {
        self.expect("STARTTLS", 220).await;
        self.handshake(tls).await
    }

    /// The TLS handshake as a client that trusts `tls`'s certificate, on this connection.
    pub async fn handshake(self, tls: &DevTls) -> Raw {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(tls.cert_der.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        assert!(self.io.buffer().is_empty());
        let stream = connector
            .connect(
                ServerName::try_from("localhost").unwrap(),
                self.io.into_inner(),
            )
            .await
            .expect("TLS handshake");
        Raw {
            io: BufReader::new(Box::new(stream)),
        }
    }

    /// DATA with `body` already dot-stuffed and terminated by the caller.
    pub async fn data(&mut self, wire: &[u8]) -> Reply {
        self.expect("DATA", 354).await;
        self.write(wire).await;
        self.reply().await.expect("reply to the end of DATA")
    }
}
