//! The IMAP source of a mailbox transfer ([`TransferSource`]): a member's mailbox at another
//! provider, read with `async-imap` (a maintained IMAP client: its own parser, not ours) over
//! rustls. Read-only: folders are opened with EXAMINE and bodies fetched with `BODY.PEEK[]`,
//! so the source's `\Seen` flags and its `\Recent` state never change.
//!
//! The server is named by an URL: `imaps://host[:993]` (TLS from the first byte) or
//! `imap://host[:143]` (STARTTLS, required: a password never crosses the network in clear). The
//! user comes with the URL (`imaps://user%40pec.example@host`) or apart; a password in the URL is
//! refused (it would stay in shell histories and process lists). Certificates are checked
//! against the Mozilla roots (`webpki-roots`) and any CA the caller adds (a test server's).

use std::sync::Arc;
use std::time::Duration;

use async_imap::types::{Flag, NameAttribute};
use futures_util::TryStreamExt;
use pec_ports::mailstore::{Flags, SpecialUse};
use pec_ports::transfer::{
    SourceEntry, SourceError, SourceFolder, SourceListing, SourceMessage, TransferSource,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long connecting (TCP, TLS, greeting) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one command may take (a fetch of a batch of large messages included).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `imaps://`: TLS from the first byte.
    Implicit,
    /// `imap://`: STARTTLS before anything else; a server without it is refused.
    StartTls,
}

/// Where the source mailbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImapServer {
    pub security: Security,
    pub host: String,
    pub port: u16,
    /// The login name, if the URL carries one.
    pub user: Option<String>,
}

/// A bad source URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("{0:?} is not a URL: {1}")]
    Syntax(String, String),
    #[error(
        "{0:?}: use imaps://host[:port] (TLS) or imap://host[:port] (STARTTLS); plain IMAP \
         without TLS is refused"
    )]
    Scheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error(
        "{0:?} carries a password: give it on standard input (--password-stdin) or in \
         PEC_TRANSFER_PASSWORD, never in the URL"
    )]
    Password(String),
    #[error("{0:?}: a source URL names a server (and a user), not a path, query or fragment")]
    Extra(String),
}

impl ImapServer {
    /// Parses `imaps://[user@]host[:port]` or `imap://[user@]host[:port]`.
    pub fn parse(text: &str) -> Result<Self, UrlError> {
        let url =
            url::Url::parse(text).map_err(|e| UrlError::Syntax(text.into(), e.to_string()))?;
        let (security, default_port) = match url.scheme() {
            "imaps" => (Security::Implicit, 993),
            "imap" => (Security::StartTls, 143),
            _ => return Err(UrlError::Scheme(text.into())),
        };
        if url.password().is_some() {
            return Err(UrlError::Password(redact(text)));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(UrlError::Extra(text.into()));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            _ => return Err(UrlError::NoHost(text.into())),
        };
        let user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        Ok(Self {
            security,
            port: url.port().unwrap_or(default_port),
            host,
            user,
        })
    }
}

fn redact(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Err(_) => "(the URL)".into(),
    }
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("u={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

type Session = async_imap::Session<TlsStream<TcpStream>>;

/// A logged-in, read-only IMAP session on the source mailbox.
pub struct ImapSource {
    id: String,
    session: Session,
    /// The folder EXAMINEd now, with its UIDVALIDITY.
    open: Option<(String, u32)>,
}

impl std::fmt::Debug for ImapSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapSource")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Unavailable(format!("{what}: {e}"))
}

fn answer(what: &str, e: async_imap::error::Error) -> SourceError {
    use async_imap::error::Error as E;
    match e {
        E::No(m) | E::Bad(m) => SourceError::Refused(format!("{what}: {m}")),
        E::Validate(v) => SourceError::Refused(format!("{what}: {v}")),
        other => unavailable(what, other),
    }
}

async fn timed<T>(
    what: &str,
    limit: Duration,
    f: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| SourceError::Unavailable(format!("{what}: no answer within {limit:?}")))?
}

impl ImapSource {
    /// Connects, secures and logs in as `user` with `password` (never logged or echoed).
    /// `extra_roots` are PEM certificates trusted besides the Mozilla roots.
    pub async fn connect(
        server: &ImapServer,
        user: &str,
        password: &str,
        extra_roots: Option<&[u8]>,
    ) -> Result<Self, SourceError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(pem) = extra_roots {
            let mut n = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| {
                    SourceError::Refused(format!("the CA file is not PEM certificates: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    SourceError::Refused(format!("a certificate of the CA file: {e}"))
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(SourceError::Refused(
                    "the CA file holds no PEM certificate".into(),
                ));
            }
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| SourceError::Refused(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(server.host.clone())
            .map_err(|e| SourceError::Refused(format!("{}: {e}", server.host)))?;
        let at = format!("{}:{}", server.host, server.port);

        let client = timed("connecting", CONNECT_TIMEOUT, async {
            let tcp = TcpStream::connect((server.host.as_str(), server.port))
                .await
                .map_err(|e| unavailable(&format!("connecting to {at}"), e))?;
            let tls = match server.security {
                Security::Implicit => connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unavailable(&format!("TLS with {at}"), e))?,
                Security::StartTls => {
                    let mut plain = async_imap::Client::new(tcp);
                    greeting(&mut plain, &at).await?;
                    plain
                        .run_command_and_check_ok("STARTTLS", None)
                        .await
                        .map_err(|e| {
                            SourceError::Refused(format!(
                                "{at} does not start TLS ({e}): use its imaps:// address"
                            ))
                        })?;
                    connector
                        .connect(name, plain.into_inner())
                        .await
                        .map_err(|e| unavailable(&format!("TLS with {at}"), e))?
                }
            };
            let mut client = async_imap::Client::new(tls);
            if server.security == Security::Implicit {
                greeting(&mut client, &at).await?;
            }
            Ok(client)
        })
        .await?;
        let session = timed("logging in", CONNECT_TIMEOUT, async {
            client
                .login(user, password)
                .await
                .map_err(|(e, _)| match e {
                    async_imap::error::Error::No(m) | async_imap::error::Error::Bad(m) => {
                        SourceError::Refused(format!("{at} refused the login of {user}: {m}"))
                    }
                    other => unavailable(&format!("logging in to {at}"), other),
                })
        })
        .await?;
        Ok(Self {
            // The account, not the endpoint: imaps:// and imap:// (STARTTLS) reach one mailbox,
            // so a transfer started over one resumes over the other.
            id: format!(
                "imap:{}@{}",
                user.to_lowercase(),
                server.host.to_lowercase()
            ),
            session,
            open: None,
        })
    }

    /// Logs out (the transfer is over; a dropped connection is fine too).
    pub async fn logout(mut self) {
        let _ = timed("logging out", CONNECT_TIMEOUT, async {
            self.session
                .logout()
                .await
                .map_err(|e| unavailable("LOGOUT", e))
        })
        .await;
    }

    fn drain(&mut self) {
        while self.session.unsolicited_responses.try_recv().is_ok() {}
    }

    async fn examine(&mut self, folder: &str) -> Result<(u32, u32), SourceError> {
        let session = &mut self.session;
        let mailbox = timed("EXAMINE", COMMAND_TIMEOUT, async {
            session
                .examine(folder)
                .await
                .map_err(|e| answer(&format!("EXAMINE {folder}"), e))
        })
        .await?;
        self.drain();
        let validity = mailbox.uid_validity.ok_or_else(|| {
            SourceError::Refused(format!("{folder}: the server gives no UIDVALIDITY"))
        })?;
        self.open = Some((folder.to_owned(), validity));
        Ok((validity, mailbox.exists))
    }
}

async fn greeting<T>(client: &mut async_imap::Client<T>, at: &str) -> Result<(), SourceError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + std::fmt::Debug + Send,
{
    match client.read_response().await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(SourceError::Unavailable(format!(
            "{at} closed the connection before its greeting"
        ))),
        Err(e) => Err(unavailable(&format!("the greeting of {at}"), e)),
    }
}

fn special_use(attributes: &[NameAttribute<'_>]) -> Option<SpecialUse> {
    attributes.iter().find_map(|a| match a {
        NameAttribute::Sent => Some(SpecialUse::Sent),
        NameAttribute::Drafts => Some(SpecialUse::Drafts),
        NameAttribute::Junk => Some(SpecialUse::Junk),
        NameAttribute::Trash => Some(SpecialUse::Trash),
        _ => None,
    })
}

fn flag_text(flag: Flag<'_>) -> Option<String> {
    Some(match flag {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent | Flag::MayCreate => return None,
        // System flags are case-insensitive (RFC 3501 section 2.3.2): `\SEEN` is `\Seen`.
        Flag::Custom(k) if k.starts_with('\\') => match k.to_ascii_lowercase().as_str() {
            "\\seen" => "\\Seen".into(),
            "\\answered" => "\\Answered".into(),
            "\\flagged" => "\\Flagged".into(),
            "\\deleted" => "\\Deleted".into(),
            "\\draft" => "\\Draft".into(),
            "\\recent" => return None,
            _ => k.into_owned(),
        },
        Flag::Custom(k) => k.into_owned(),
    })
}

/// UIDs as an IMAP sequence set (`1:4,7,9:10`).
fn uid_set(uids: &[u32]) -> String {
    let mut sorted = uids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

impl TransferSource for ImapSource {
    fn id(&self) -> String {
        self.id.clone()
    }

    async fn folders(&mut self) -> Result<Vec<SourceFolder>, SourceError> {
        let session = &mut self.session;
        let names: Vec<_> = timed("LIST", COMMAND_TIMEOUT, async {
            session
                .list(Some(""), Some("*"))
                .await
                .map_err(|e| answer("LIST", e))?
                .try_collect()
                .await
                .map_err(|e| answer("LIST", e))
        })
        .await?;
        self.drain();
        Ok(names
            .iter()
            .map(|n| SourceFolder {
                name: n.name().to_owned(),
                special_use: special_use(n.attributes()),
                delimiter: n.delimiter().and_then(|d| d.chars().next()),
                selectable: !n
                    .attributes()
                    .iter()
                    .any(|a| matches!(a, NameAttribute::NoSelect)),
            })
            .collect())
    }

    async fn list(&mut self, folder: &str) -> Result<SourceListing, SourceError> {
        let (uid_validity, exists) = self.examine(folder).await?;
        if exists == 0 {
            return Ok(SourceListing {
                uid_validity,
                entries: Vec::new(),
            });
        }
        let session = &mut self.session;
        let fetched: Vec<_> = timed("UID FETCH", COMMAND_TIMEOUT, async {
            session
                .uid_fetch("1:*", "(UID RFC822.SIZE)")
                .await
                .map_err(|e| answer(&format!("UID FETCH in {folder}"), e))?
                .try_collect()
                .await
                .map_err(|e| answer(&format!("UID FETCH in {folder}"), e))
        })
        .await?;
        self.drain();
        // A FETCH without UID is an unsolicited update, not an answer; one without a size is
        // kept (the append checks the quota on the bytes anyway).
        let mut entries: Vec<SourceEntry> = fetched
            .iter()
            .filter_map(|f| {
                Some(SourceEntry {
                    uid: f.uid?,
                    size: f.size.map(u64::from).unwrap_or(0),
                })
            })
            .collect();
        entries.sort_by_key(|e| e.uid);
        entries.dedup_by_key(|e| e.uid);
        if entries.len() < exists as usize {
            return Err(SourceError::Unavailable(format!(
                "{folder}: the server holds {exists} messages but listed {}: run the transfer again",
                entries.len()
            )));
        }
        Ok(SourceListing {
            uid_validity,
            entries,
        })
    }

    async fn fetch(
        &mut self,
        folder: &str,
        uid_validity: u32,
        uids: &[u32],
    ) -> Result<Vec<SourceMessage>, SourceError> {
        if uids.is_empty() {
            return Ok(Vec::new());
        }
        let validity = match &self.open {
            Some((open, v)) if open == folder => *v,
            _ => self.examine(folder).await?.0,
        };
        if validity != uid_validity {
            return Err(SourceError::Unavailable(format!(
                "{folder}: UIDVALIDITY is {validity} now, not {uid_validity} as listed (the \
                 server renumbered it): run the transfer again"
            )));
        }
        let set = uid_set(uids);
        let session = &mut self.session;
        let fetched: Vec<_> = timed("UID FETCH", COMMAND_TIMEOUT, async {
            session
                .uid_fetch(&set, "(UID FLAGS INTERNALDATE BODY.PEEK[])")
                .await
                .map_err(|e| answer(&format!("UID FETCH {set} in {folder}"), e))?
                .try_collect()
                .await
                .map_err(|e| answer(&format!("UID FETCH {set} in {folder}"), e))
        })
        .await?;
        self.drain();
        let mut out = Vec::with_capacity(fetched.len());
        for f in &fetched {
            // A FETCH without UID or body is an unsolicited flag update, not an answer.
            let (Some(uid), Some(body)) = (f.uid, f.body()) else {
                continue;
            };
            if !uids.contains(&uid) {
                continue;
            }
            let internal_date = f.internal_date().ok_or_else(|| {
                SourceError::Refused(format!(
                    "{folder} (UIDVALIDITY {validity}) UID {uid}: the server gave no INTERNALDATE"
                ))
            })?;
            let flags: Flags = f.flags().filter_map(flag_text).collect();
            out.push(SourceMessage {
                uid,
                bytes: body.to_vec(),
                flags,
                internal_date: internal_date.with_timezone(&chrono::Utc),
            });
        }
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = ImapServer::parse("imaps://mario.rossi%40pec.example@imaps.pec.example").unwrap();
        assert_eq!(
            s,
            ImapServer {
                security: Security::Implicit,
                host: "imaps.pec.example".into(),
                port: 993,
                user: Some("mario.rossi@pec.example".into()),
            }
        );
        let s = ImapServer::parse("imap://127.0.0.1:1143").unwrap();
        assert_eq!(
            (s.security, s.port, s.user),
            (Security::StartTls, 1143, None)
        );
        assert!(matches!(
            ImapServer::parse("imaps://u:secret@h").unwrap_err(),
            UrlError::Password(m) if !m.contains("secret")
        ));
        assert!(matches!(
            ImapServer::parse("pop3://h").unwrap_err(),
            UrlError::Scheme(_)
        ));
        assert!(matches!(
            ImapServer::parse("imaps://h/INBOX").unwrap_err(),
            UrlError::Extra(_)
        ));
        assert!(matches!(
            ImapServer::parse("imaps.pec.example").unwrap_err(),
            UrlError::Syntax(..)
        ));
        assert_eq!(
            ImapServer::parse("imaps://a+b@h").unwrap().user.as_deref(),
            Some("a+b")
        );
    }

    #[test]
    fn system_flags_in_any_case() {
        use std::borrow::Cow;
        let f = |s: &'static str| flag_text(Flag::Custom(Cow::Borrowed(s)));
        assert_eq!(f("\\SEEN").as_deref(), Some("\\Seen"));
        assert_eq!(f("\\recent"), None);
        assert_eq!(f("$Label1").as_deref(), Some("$Label1"));
        assert_eq!(flag_text(Flag::Recent), None);
    }

    #[test]
    fn uid_sets() {
        assert_eq!(uid_set(&[7, 1, 2, 3, 9, 10, 4]), "1:4,7,9:10");
        assert_eq!(uid_set(&[5]), "5");
    }
}
