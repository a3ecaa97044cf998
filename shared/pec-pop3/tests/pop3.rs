//! The POP3 server over real TCP on 127.0.0.1 with the memory store and a dev certificate:
//! Python's poplib as a person's client, curl, and a raw client for exact lines and hostile
//! input.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use pec_pop3::{Config, Security, Server};
use pec_ports::mailstore::{DELETED, FlagChange, Flags, MailStore, Origin, SEEN};
use pec_ports::{MemoryMailStore, MemoryThrottle, ThrottlePolicy};
use pec_submit::dev_tls::{self, DevTls};
use pec_submit::{Account, BoxFuture, CredentialError, Credentials, HashCost, hash_password_with};
use pec_testkit::prereq;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const MARIO: &str = "mario.rossi@pec.example.it";
const ANNA: &str = "anna.bianchi@pec.example.it";
const LUCA: &str = "luca.verdi@pec.example.it";
const PASSWORD: &str = "correct horse battery staple";
const WAIT: Duration = Duration::from_secs(20);

const FIRST: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nTo: mario.rossi@pec.example.it\r\nSubject: first\r\nDate: Fri, 4 Dec 2026 10:00:00 +0100\r\nMessage-ID: <1@pec.example.it>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCiao Mario,\r\nla prima.\r\n";
const SECOND: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nTo: mario.rossi@pec.example.it\r\nSubject: second\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
/// Lines that start with a dot: byte-stuffed on the wire, exact after un-stuffing.
const DOTS: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nSubject: dots\r\n\r\n.\r\n..\r\n.hidden line\r\nend.\r\n.\r\n";
/// Stored with bare LFs (no delivery path writes these; the server must still answer sanely).
const BARE_LF: &[u8] = b"Subject: bare\n\nline one\n.dot\nlast without newline";

struct Accounts(HashMap<String, Account>);

impl Credentials for Accounts {
    fn lookup<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Account>, CredentialError>> {
        Box::pin(async move { Ok(self.0.get(&username.to_ascii_lowercase()).cloned()) })
    }
}

struct TestServer {
    tls_addr: SocketAddr,
    plain_addr: SocketAddr,
    tls: DevTls,
    store: Arc<MemoryMailStore>,
    ca_file: PathBuf,
    stop: watch::Sender<bool>,
}

fn test_config() -> Config {
    Config {
        dummy_hash_cost: HashCost::Fast,
        max_errors: 50,
        ..Config::default()
    }
}

async fn start() -> TestServer {
    start_with(test_config(), ThrottlePolicy::default()).await
}

async fn start_with(config: Config, policy: ThrottlePolicy) -> TestServer {
    let tls = dev_tls::localhost().expect("dev certificate");
    let hash = hash_password_with(PASSWORD, HashCost::Fast).expect("hash");
    let accounts: HashMap<String, Account> = [MARIO, ANNA, LUCA]
        .into_iter()
        .map(|a| {
            (
                a.to_owned(),
                Account {
                    address: a.to_owned(),
                    tenant: "t1".to_owned(),
                    password_hash: hash.clone(),
                    locked: false,
                    refusal: None,
                },
            )
        })
        .chain([(
            SPAMMED.to_owned(),
            Account {
                address: SPAMMED.to_owned(),
                tenant: "t1".to_owned(),
                password_hash: "!not-activated".to_owned(),
                locked: true,
                refusal: Some(pec_submit::Refusal {
                    text: format!("the mailbox {SPAMMED} was locked because it sent spam"),
                    to_anyone: true,
                }),
            },
        )])
        .collect();
    let store = Arc::new(MemoryMailStore::new());
    for a in [MARIO, ANNA, LUCA] {
        store.create_mailbox(a, 1024 * 1024);
    }
    for body in [FIRST, SECOND, DOTS] {
        deliver(&store, MARIO, body).await;
    }
    deliver(&store, ANNA, b"Subject: anna's secret\r\n\r\nprivate\r\n").await;
    deliver(&store, LUCA, BARE_LF).await;
    deliver(&store, LUCA, FIRST).await;
    let server = Server::new(
        config,
        tls.server_config.clone(),
        Arc::new(Accounts(accounts)),
        Arc::new(MemoryThrottle::new(policy)),
        Arc::clone(&store),
    );
    let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tls_addr, plain_addr) = (
        tls_listener.local_addr().unwrap(),
        plain_listener.local_addr().unwrap(),
    );
    let (stop, stop_rx) = watch::channel(false);
    let wait = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(
        server
            .clone()
            .serve(tls_listener, Security::ImplicitTls, wait(stop_rx.clone())),
    );
    tokio::spawn(server.serve(plain_listener, Security::StartTls, wait(stop_rx)));
    let ca_file = std::env::temp_dir().join(format!("pec-pop3-ca-{}.pem", tls_addr.port()));
    std::fs::write(&ca_file, &tls.cert_pem).unwrap();
    TestServer {
        tls_addr,
        plain_addr,
        tls,
        store,
        ca_file,
        stop,
    }
}

async fn deliver(store: &MemoryMailStore, to: &str, body: &[u8]) {
    store
        .append(
            to,
            "INBOX",
            body.to_vec(),
            Flags::new(),
            chrono::Utc::now(),
            Origin::Delivered,
        )
        .await
        .expect("delivery");
}

/// Whether `tool` runs (`--version`, and `also` in its output); a missing one fails the test
/// under CI=true and skips it elsewhere.
fn have(tool: &str, also: &str) -> bool {
    let output = std::process::Command::new(tool).arg("--version").output();
    let found = match output {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if text.contains(also) {
                Ok(())
            } else {
                Err(format!("`{tool} --version` does not mention {also}"))
            }
        }
        Ok(o) => Err(format!("`{tool} --version` exited with {}", o.status)),
        Err(e) => Err(format!("`{tool}` did not run: {e}")),
    };
    prereq::require(tool, found).is_some()
}

async fn uids(store: &MemoryMailStore, address: &str) -> Vec<u32> {
    store
        .messages(address, "INBOX")
        .await
        .unwrap()
        .iter()
        .map(|m| m.uid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_poplib_session() {
    if !have("python3", "Python") {
        return;
    }
    let t = start().await;
    let dir = std::env::temp_dir().join(format!("pec-pop3-msgs-{}", t.tls_addr.port()));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, m) in [FIRST, SECOND, DOTS].iter().enumerate() {
        std::fs::write(dir.join(format!("{}.eml", i + 1)), m).unwrap();
    }
    let quota_before = t.store.quota(MARIO).await.unwrap().used;
    assert_eq!(
        quota_before as usize,
        FIRST.len() + SECOND.len() + DOTS.len()
    );
    // An IMAP client flagged the first message \Deleted without expunging it: POP3 lists it,
    // and its QUIT removes only what DELE marked.
    let deleted = Flags::from([DELETED.to_owned()]);
    t.store
        .store_flags(MARIO, "INBOX", &[1], FlagChange::Add, &deleted)
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pop3_client.py");
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(t.tls_addr.port().to_string())
        .arg(t.plain_addr.port().to_string())
        .arg(&t.ca_file)
        .arg(MARIO)
        .arg(PASSWORD)
        .arg(&dir)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("poplib script finished")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "poplib script failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(stdout.lines().last(), Some("ALL OK"), "{stdout}\n{stderr}");
    // Only the second message is gone, and exactly its octets left the quota.
    assert_eq!(uids(&t.store, MARIO).await, [1, 3]);
    let quota_after = t.store.quota(MARIO).await.unwrap().used;
    assert_eq!(quota_before - quota_after, SECOND.len() as u64);
    // RETR set \Seen on what it sent.
    for m in t.store.messages(MARIO, "INBOX").await.unwrap() {
        assert!(m.flags.contains(SEEN), "uid {} seen: {:?}", m.uid, m.flags);
    }
    // Nobody else's mailbox was touched.
    assert_eq!(uids(&t.store, ANNA).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_lists_and_retrieves_over_pop3s_and_stls() {
    if !have("curl", "pop3s") {
        return;
    }
    let t = start().await;
    let curl = |args: Vec<String>| {
        tokio::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", "--cacert"])
            .arg(&t.ca_file)
            .arg("--user")
            .arg(format!("{MARIO}:{PASSWORD}"))
            .args(args)
            .output()
    };
    let (tls, plain) = (t.tls_addr.port(), t.plain_addr.port());
    let list = curl(vec![format!("pop3s://127.0.0.1:{tls}/")])
        .await
        .unwrap();
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let expected = format!(
        "1 {}\r\n2 {}\r\n3 {}\r\n",
        FIRST.len(),
        SECOND.len(),
        DOTS.len()
    );
    assert_eq!(String::from_utf8_lossy(&list.stdout), expected);
    for (n, message) in [(1, FIRST), (3, DOTS)] {
        let got = curl(vec![format!("pop3s://127.0.0.1:{tls}/{n}")])
            .await
            .unwrap();
        assert!(
            got.status.success(),
            "{}",
            String::from_utf8_lossy(&got.stderr)
        );
        assert_eq!(got.stdout, message, "curl gets message {n} exactly");
    }
    // The clear-text port with STLS required.
    let got = curl(vec![
        "--ssl-reqd".to_owned(),
        format!("pop3://127.0.0.1:{plain}/2"),
    ])
    .await
    .unwrap();
    assert!(
        got.status.success(),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    assert_eq!(got.stdout, SECOND, "curl over STLS gets the bytes exactly");
    // curl says QUIT with nothing marked: nothing was deleted.
    assert_eq!(uids(&t.store, MARIO).await, [1, 2, 3]);
}

// ---------------------------------------------------------------------------------------------
// A raw client: exact lines, hostile input.

struct Raw<S> {
    io: BufReader<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Raw<S> {
    async fn line(&mut self) -> String {
        let mut line = Vec::new();
        let n = tokio::time::timeout(WAIT, self.io.read_until(b'\n', &mut line))
            .await
            .expect("server answered in time")
            .expect("read");
        assert!(n > 0, "connection closed");
        String::from_utf8(line).expect("answers are UTF-8")
    }

    /// Whether the server closed the connection (after reading whatever came before).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(WAIT, self.io.read_to_end(&mut rest)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.get_mut().write_all(bytes).await.unwrap();
        self.io.get_mut().flush().await.unwrap();
    }

    /// Sends a command and returns its one-line answer.
    async fn command(&mut self, text: &str) -> String {
        self.send(format!("{text}\r\n").as_bytes()).await;
        self.line().await
    }

    /// Sends a command and returns its status line and the raw bytes of the multi-line body
    /// (still byte-stuffed, without the terminating `.` line).
    async fn multi(&mut self, text: &str) -> (String, Vec<u8>) {
        let status = self.command(text).await;
        if !status.starts_with("+OK") {
            return (status, Vec::new());
        }
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            tokio::time::timeout(WAIT, self.io.read_until(b'\n', &mut line))
                .await
                .expect("server answered in time")
                .expect("read");
            assert!(!line.is_empty(), "connection closed in a multi-line answer");
            assert!(line.ends_with(b"\r\n"), "CRLF: {line:?}");
            if line == b".\r\n" {
                return (status, body);
            }
            body.extend_from_slice(&line);
        }
    }

    async fn login(&mut self, user: &str) -> String {
        let answer = self.command(&format!("USER {user}")).await;
        assert!(answer.starts_with("+OK"), "{answer}");
        self.command(&format!("PASS {PASSWORD}")).await
    }
}

fn client_config(tls: &DevTls) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(tls.cert_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(config)
}

type TlsRaw = Raw<tokio_rustls::client::TlsStream<TcpStream>>;

async fn tls_over(t: &TestServer, tcp: TcpStream) -> TlsRaw {
    let connector = tokio_rustls::TlsConnector::from(client_config(&t.tls));
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    Raw {
        io: BufReader::new(tls),
    }
}

async fn connect_tls(t: &TestServer) -> TlsRaw {
    let tcp = TcpStream::connect(t.tls_addr).await.unwrap();
    let mut raw = tls_over(t, tcp).await;
    let greeting = raw.line().await;
    assert!(greeting.starts_with("+OK"), "{greeting}");
    raw
}

fn plain_b64(authz: &str, user: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{authz}\0{user}\0{password}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stls_and_no_login_in_clear() {
    let t = start().await;
    let tcp = TcpStream::connect(t.plain_addr).await.unwrap();
    let mut raw = Raw {
        io: BufReader::new(tcp),
    };
    assert!(raw.line().await.starts_with("+OK"));
    let (status, caps) = raw.multi("CAPA").await;
    let caps = String::from_utf8(caps).unwrap();
    assert!(status.starts_with("+OK"), "{status}");
    assert!(caps.contains("STLS\r\n"), "{caps}");
    assert!(
        !caps.contains("USER") && !caps.contains("SASL"),
        "no login offered in clear: {caps}"
    );
    for command in [
        format!("USER {MARIO}"),
        format!("PASS {PASSWORD}"),
        format!("AUTH PLAIN {}", plain_b64("", MARIO, PASSWORD)),
        "AUTH PLAIN".to_owned(),
        "AUTH".to_owned(),
    ] {
        let answer = raw.command(&command).await;
        assert!(
            answer.starts_with("-ERR") && answer.contains("STLS"),
            "{command}: {answer}"
        );
    }
    let answer = raw.command("STAT").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    // Anything pipelined after STLS in clear text is dropped, not run inside TLS.
    raw.send(format!("STLS\r\nUSER {MARIO}\r\nPASS {PASSWORD}\r\n").as_bytes())
        .await;
    let answer = raw.line().await;
    assert!(answer.starts_with("+OK"), "{answer}");
    let mut raw = tls_over(&t, raw.io.into_inner()).await;
    let answer = raw.command("STAT").await;
    assert!(
        answer.starts_with("-ERR"),
        "the injected login did not happen: {answer}"
    );
    let (_, caps) = raw.multi("CAPA").await;
    let caps = String::from_utf8(caps).unwrap();
    assert!(
        caps.contains("USER\r\n") && caps.contains("SASL PLAIN\r\n") && !caps.contains("STLS"),
        "{caps}"
    );
    let answer = raw.command("STLS").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    let answer = raw.login(MARIO).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    let answer = raw.command("STAT").await;
    assert_eq!(
        answer,
        format!("+OK 3 {}\r\n", FIRST.len() + SECOND.len() + DOTS.len())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_plain_with_and_without_initial_response() {
    let t = start().await;
    let mut raw = connect_tls(&t).await;
    let (status, mechanisms) = raw.multi("AUTH").await;
    assert!(status.starts_with("+OK"), "{status}");
    assert_eq!(mechanisms, b"PLAIN\r\n");
    let answer = raw.command("AUTH CRAM-MD5").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    // Cancelled exchange.
    assert_eq!(raw.command("AUTH PLAIN").await, "+ \r\n");
    let answer = raw.command("*").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    // Wrong password, then the right one, without an initial response.
    assert_eq!(raw.command("AUTH PLAIN").await, "+ \r\n");
    let answer = raw.command(&plain_b64("", MARIO, "nope")).await;
    assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    assert_eq!(raw.command("AUTH PLAIN").await, "+ \r\n");
    let answer = raw.command(&plain_b64(MARIO, MARIO, PASSWORD)).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    assert!(raw.command("QUIT").await.starts_with("+OK"));
    // With the initial response (RFC 5034).
    let mut raw = connect_tls(&t).await;
    let answer = raw
        .command(&format!("auth plain {}", plain_b64("", MARIO, PASSWORD)))
        .await;
    assert!(answer.starts_with("+OK"), "{answer}");
    // Logged in: no second login, CAPA without USER/SASL.
    let answer = raw.command(&format!("USER {MARIO}")).await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    let (_, caps) = raw.multi("CAPA").await;
    let caps = String::from_utf8(caps).unwrap();
    assert!(caps.contains("UIDL") && !caps.contains("USER"), "{caps}");
    // TOP leaves \Seen alone, RETR sets it.
    let (status, _) = raw.multi("TOP 2 1").await;
    assert!(status.starts_with("+OK"), "{status}");
    let seen = |store: Arc<MemoryMailStore>| async move {
        store
            .messages(MARIO, "INBOX")
            .await
            .unwrap()
            .iter()
            .filter(|m| m.flags.contains(SEEN))
            .map(|m| m.uid)
            .collect::<Vec<_>>()
    };
    assert!(seen(Arc::clone(&t.store)).await.is_empty());
    let (status, body) = raw.multi("RETR 2").await;
    assert_eq!(status, format!("+OK {} octets\r\n", SECOND.len()));
    assert_eq!(body, SECOND);
    assert_eq!(seen(Arc::clone(&t.store)).await, [2]);
    // Byte-stuffing on the wire.
    let (_, body) = raw.multi("RETR 3").await;
    assert_eq!(
        body,
        b"From: Anna <anna.bianchi@pec.example.it>\r\nSubject: dots\r\n\r\n..\r\n...\r\n..hidden line\r\nend.\r\n..\r\n"
    );
    assert!(raw.command("QUIT").await.starts_with("+OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stored_with_bare_lf_goes_out_with_crlf() {
    let t = start().await;
    let mut raw = connect_tls(&t).await;
    assert!(raw.login(LUCA).await.starts_with("+OK"));
    let (_, body) = raw.multi("RETR 1").await;
    assert_eq!(
        body,
        b"Subject: bare\r\n\r\nline one\r\n..dot\r\nlast without newline\r\n"
    );
    let (_, body) = raw.multi("TOP 1 1").await;
    assert_eq!(body, b"Subject: bare\r\n\r\nline one\r\n");
    let uidl = raw.command("UIDL 2").await;
    let folder = t.store.folder(LUCA, "INBOX").await.unwrap().unwrap();
    assert_eq!(
        uidl,
        format!("+OK 2 {:08X}{:08X}\r\n", folder.uid_validity, 2)
    );
}

/// A spam-locked mailbox (its hash matches nothing).
const SPAMMED: &str = "spam@pec.example.it";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_mailbox_is_told_what_happened() {
    let t = start().await;
    let mut raw = connect_tls(&t).await;
    raw.command(&format!("USER {SPAMMED}")).await;
    let answer = raw.command("PASS whatever").await;
    assert_eq!(
        answer,
        format!("-ERR [AUTH] the mailbox {SPAMMED} was locked because it sent spam\r\n")
    );
    raw.command(&format!("USER {MARIO}")).await;
    assert_eq!(
        raw.command("PASS wrong").await,
        "-ERR [AUTH] Authentication failed\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_logins_get_sys_temp() {
    let policy = ThrottlePolicy {
        pair_failures: 2,
        ..ThrottlePolicy::default()
    };
    let config = Config {
        max_auth_failures: 10,
        ..test_config()
    };
    let t = start_with(config, policy).await;
    let mut raw = connect_tls(&t).await;
    for _ in 0..2 {
        raw.command(&format!("USER {MARIO}")).await;
        let answer = raw.command("PASS wrong").await;
        assert_eq!(answer, "-ERR [AUTH] Authentication failed\r\n");
    }
    // Locked for this name from this address, even with the right password.
    let answer = raw.login(MARIO).await;
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    // Another mailbox from the same address is not locked by that.
    let answer = raw.login(ANNA).await;
    assert!(answer.starts_with("+OK"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_auth_failures_close_the_connection() {
    let t = start().await;
    let mut raw = connect_tls(&t).await;
    for _ in 0..3 {
        raw.command("USER nobody@pec.example.it").await;
        let answer = raw.command("PASS x").await;
        assert!(answer.starts_with("-ERR [AUTH]"), "{answer}");
    }
    assert!(raw.closed().await, "closed after the third failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_gets_err_and_the_server_survives() {
    let t = start().await;
    let mut raw = connect_tls(&t).await;
    // Commands before authentication.
    for command in [
        "STAT", "LIST", "LIST 1", "UIDL", "RETR 1", "TOP 1 1", "DELE 1", "RSET", "NOOP", "PASS x",
    ] {
        let answer = raw.command(command).await;
        assert!(answer.starts_with("-ERR"), "{command}: {answer}");
    }
    // A long line (100 KB) is answered once and dropped; so is one far longer, with no line
    // end for a while.
    let long = format!("USER {}\r\n", "a".repeat(100_000));
    let answer = raw.command(long.trim_end()).await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    raw.send(&vec![b'x'; 2 * 1024 * 1024]).await;
    raw.send(b"\r\n").await;
    let answer = raw.line().await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    // Binary garbage and non-UTF-8 bytes.
    for garbage in [
        &b"\x00\xff\xfe garbage\r\n"[..],
        b"USER \xc3\x28\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n",
        b"\r\n",
        b"RETR \x00\r\n",
    ] {
        raw.send(garbage).await;
        let answer = raw.line().await;
        assert!(answer.starts_with("-ERR"), "{garbage:?}: {answer}");
    }
    // Bad base64, and base64 that is not a PLAIN message.
    let answer = raw.command("AUTH PLAIN !!!not-base64!!!").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    assert_eq!(raw.command("AUTH PLAIN").await, "+ \r\n");
    let answer = raw.command("%%%%").await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    for response in [
        base64::engine::general_purpose::STANDARD.encode("no nul at all"),
        base64::engine::general_purpose::STANDARD.encode(format!("{ANNA}\0{MARIO}\0{PASSWORD}")),
        base64::engine::general_purpose::STANDARD.encode(b"\0\xff\xfe\0pw"),
        "=".to_owned(),
    ] {
        let answer = raw.command(&format!("AUTH PLAIN {response}")).await;
        assert!(answer.starts_with("-ERR"), "{response}: {answer}");
    }
    let answer = raw
        .command("APOP mario c4c9334bac560ecc979e58001b3e22fb")
        .await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    // The session still works: log in.
    let answer = raw.login(MARIO).await;
    assert!(answer.starts_with("+OK"), "{answer}");
    for command in [
        "RETR 0",
        "RETR 4",
        "RETR 4294967296",
        "RETR -1",
        "TOP 1",
        "TOP 1 -1",
        "DELE 99",
        "LIST 1 2",
    ] {
        let answer = raw.command(command).await;
        assert!(answer.starts_with("-ERR"), "{command}: {answer}");
    }
    // 10,000 pipelined commands in one write, each answered in order.
    let mut flood = Vec::new();
    let kinds = ["NOOP", "STAT", "LIST 1", "UIDL 2", "DELE 99"];
    for i in 0..10_000 {
        flood.extend_from_slice(kinds[i % kinds.len()].as_bytes());
        flood.extend_from_slice(b"\r\n");
    }
    raw.send(&flood).await;
    for i in 0..10_000 {
        let answer = raw.line().await;
        let expect_ok = kinds[i % kinds.len()] != "DELE 99";
        assert_eq!(answer.starts_with("+OK"), expect_ok, "#{i}: {answer}");
    }
    let answer = raw.command("STAT").await;
    assert!(answer.starts_with("+OK 3 "), "{answer}");
    assert!(raw.command("QUIT").await.starts_with("+OK"));
    // The server still serves new sessions, and nothing was deleted.
    let mut other = connect_tls(&t).await;
    assert!(other.login(MARIO).await.starts_with("+OK"));
    assert_eq!(uids(&t.store, MARIO).await, [1, 2, 3]);
    assert_eq!(uids(&t.store, ANNA).await, [1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_errors_close_the_connection() {
    let config = Config {
        max_errors: 5,
        ..test_config()
    };
    let t = start_with(config, ThrottlePolicy::default()).await;
    let mut raw = connect_tls(&t).await;
    raw.send(&b"BOGUS\r\n".repeat(100)).await;
    for _ in 0..5 {
        let answer = raw.line().await;
        assert!(answer.starts_with("-ERR"), "{answer}");
    }
    assert!(raw.closed().await);
    let mut other = connect_tls(&t).await;
    assert!(other.command("CAPA").await.starts_with("+OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_close_without_deleting() {
    let config = Config {
        login_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_millis(1500),
        ..test_config()
    };
    let t = start_with(config, ThrottlePolicy::default()).await;
    // Silent before login.
    let mut raw = connect_tls(&t).await;
    let answer = raw.line().await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    assert!(raw.closed().await);
    // Silent after DELE: the autologout is no QUIT.
    let mut raw = connect_tls(&t).await;
    assert!(raw.login(MARIO).await.starts_with("+OK"));
    assert!(raw.command("DELE 1").await.starts_with("+OK"));
    let answer = raw.line().await;
    assert!(answer.starts_with("-ERR"), "{answer}");
    assert!(raw.closed().await);
    assert_eq!(uids(&t.store, MARIO).await, [1, 2, 3]);
    // The lock went with the session.
    let mut raw = connect_tls(&t).await;
    assert!(raw.login(MARIO).await.starts_with("+OK"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_limit_and_shutdown() {
    let config = Config {
        max_sessions: 1,
        ..test_config()
    };
    let t = start_with(config, ThrottlePolicy::default()).await;
    let mut first = connect_tls(&t).await;
    assert!(first.login(MARIO).await.starts_with("+OK"));
    assert!(first.command("DELE 2").await.starts_with("+OK"));
    let tcp = TcpStream::connect(t.tls_addr).await.unwrap();
    let mut second = tls_over(&t, tcp).await;
    let answer = second.line().await;
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(second.closed().await);
    // Shutdown ends the session without the UPDATE state.
    t.stop.send_replace(true);
    let answer = first.line().await;
    assert!(answer.starts_with("-ERR [SYS/TEMP]"), "{answer}");
    assert!(first.closed().await);
    assert_eq!(uids(&t.store, MARIO).await, [1, 2, 3]);
}
