//! What the session targets (`imap_session`, `pop3_session`) share: the input format, the
//! mailboxes, the accounts, the client that plays the script against one in-process session,
//! the allocation meter, and the checks of the other mailboxes.
//!
//! # Input format
//!
//! Byte 0 holds the options, the rest is the client's script:
//!
//! - bit 0 of byte 0: 1 = the session counts as TLS from the first byte (IMAPS/POP3S),
//!   0 = clear text until `STARTTLS`/`STLS`, after which it counts as TLS;
//! - bit 1: 1 = the client keeps the connection open after its last byte (the server must end
//!   the session by itself: idle timeouts), 0 = the client closes its side at the end;
//! - bits 2..4: the connection's buffer, [`BUFFERS`] (1 and 3 octets split every write and
//!   every read).
//!
//! The script is written as it comes, except that `0xFF` starts a two-octet step:
//!
//! | octets | step |
//! |---|---|
//! | `FF 00` | write one `0xFF` octet |
//! | `FF 44` (`FF 'D'`) | the provider delivers a new message to the user's INBOX, then pause |
//! | `FF 58` (`FF 'X'`) | another client expunges the oldest message of the user's INBOX, then pause |
//! | `FF` anything else, a final `FF` | pause |
//!
//! A pause is a 1 ms sleep on tokio's paused clock, which only moves when every task waits: the
//! bytes before it are read and answered before the next ones are written (unless the server
//! itself sleeps, as for a throttled login); bytes between pauses arrive together (pipelining)
//! or split by the buffer size.

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pec_ports::mailstore::{DELETED, FlagChange, Flags, INBOX, MailStore, MessageMeta, Origin};
use pec_ports::{MemoryMailStore, ThrottlePolicy};
use pec_submit::{Account, BoxFuture, CredentialError, Credentials, HashCost};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The user the client may log in as.
pub const MARIO: &str = "mario.rossi@pec.example.it";
/// A user whose password the client does not know: their mailbox must never change.
pub const ANNA: &str = "anna.bianchi@pec.example.it";
/// A locked account with MARIO's password: it must never log in; its mailbox must never
/// change.
pub const LUCA: &str = "luca.verdi@pec.example.it";
/// MARIO's (and LUCA's) password, as the seeds spell it.
pub const PASSWORD: &str = "correct horse battery staple";

/// Connection buffer sizes (bits 2..4 of the options byte).
pub const BUFFERS: [usize; 8] = [64 * 1024, 1, 3, 16, 64, 256, 1024, 4096];

/// The server's timeouts as the targets configure them (paused clock: they cost no time).
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The throttle's delay before answering a slowed login.
pub const SLOWDOWN: Duration = Duration::from_secs(2);

/// Messages stored with CRLF line ends (as deliveries store them), none with a line starting
/// with `+OK`, `-ERR` or `+ ` (so that a POP3 multi-line answer cannot pass for a status).
pub const FIRST: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nTo: mario.rossi@pec.example.it\r\nSubject: first\r\nDate: Fri, 4 Dec 2026 10:00:00 +0100\r\nMessage-ID: <1@pec.example.it>\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCiao Mario,\r\nla prima.\r\n";
pub const SECOND: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nTo: mario.rossi@pec.example.it\r\nSubject: =?utf-8?q?seconda_=C3=A8?=\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: application/pdf; name=\"a.pdf\"\r\nContent-Disposition: attachment; filename=\"a.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b--\r\n";
/// Lines that start with a dot: byte-stuffed by POP3.
pub const DOTS: &[u8] = b"From: Anna <anna.bianchi@pec.example.it>\r\nSubject: dots\r\n\r\n.\r\n..\r\n.hidden line\r\nend.\r\n.\r\n";
pub const SENT: &[u8] = b"From: mario.rossi@pec.example.it\r\nTo: anna.bianchi@pec.example.it\r\nSubject: sent\r\n\r\nciao\r\n";
pub const DRAFT: &[u8] = b"From: mario.rossi@pec.example.it\r\nSubject: draft\r\n\r\nnot yet\r\n";
pub const NEW: &[u8] = b"From: Luca <luca.verdi@pec.example.it>\r\nTo: mario.rossi@pec.example.it\r\nSubject: arrived during the session\r\n\r\nnew\r\n";
pub const ANNA_SECRET: &[u8] =
    b"From: x@pec.example.it\r\nSubject: anna's secret\r\n\r\nprivate\r\n";
pub const LUCA_SECRET: &[u8] =
    b"From: x@pec.example.it\r\nSubject: luca's secret\r\n\r\nprivate too\r\n";

// ---------------------------------------------------------------------------------------
// Allocation meter: the peak of live heap octets during one session.

pub struct Meter;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Meter {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

/// Starts measuring; returns the live octets now.
pub fn meter_start() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// The most octets live since [`meter_start`] beyond what was live then.
pub fn meter_peak(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

/// The heap a session (with its client and the mailboxes) may take: a fixed part (read
/// buffers, runtime, parsed messages) and a share proportional to what the client sent.
pub fn memory_bound(input_len: usize) -> usize {
    4 * 1024 * 1024 + 256 * input_len
}

// ---------------------------------------------------------------------------------------
// The runtime, the accounts, the mailboxes.

/// One current-thread runtime for the whole run, with tokio's clock paused: timers fire as
/// soon as every task waits (timeouts and throttle delays take no time; see the module doc).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

/// The TLS configuration the servers are built with (never used: the seam skips TLS).
pub fn tls() -> Arc<rustls::ServerConfig> {
    static TLS: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    TLS.get_or_init(|| {
        pec_submit::dev_tls::localhost()
            .expect("dev certificate")
            .server_config
    })
    .clone()
}

pub struct Accounts(HashMap<String, Account>);

impl Credentials for Accounts {
    fn lookup<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<Account>, CredentialError>> {
        Box::pin(async move { Ok(self.0.get(&username.to_ascii_lowercase()).cloned()) })
    }
}

/// MARIO (the password the seeds use), ANNA (a password nobody knows), LUCA (MARIO's
/// password, locked). Hashed once, [`HashCost::Fast`].
pub fn accounts() -> Arc<Accounts> {
    static ACCOUNTS: OnceLock<Arc<Accounts>> = OnceLock::new();
    ACCOUNTS
        .get_or_init(|| {
            let known = pec_submit::hash_password_with(PASSWORD, HashCost::Fast).expect("hash");
            let unknown = pec_submit::hash_password_with(
                &format!("{:?}", std::time::SystemTime::now()),
                HashCost::Fast,
            )
            .expect("hash");
            let account = |address: &str, hash: &str, locked| {
                (
                    address.to_owned(),
                    Account {
                        address: address.to_owned(),
                        tenant: "t1".to_owned(),
                        password_hash: hash.to_owned(),
                        locked,
                        // A locked mailbox's refusal, told to any password: the fuzzer reaches
                        // the 525 / NO [CONTACTADMIN] / -ERR [AUTH] answers too.
                        refusal: locked.then(|| pec_submit::Refusal {
                            text: format!("the mailbox {address} is locked to protect it"),
                            to_anyone: true,
                        }),
                    },
                )
            };
            Arc::new(Accounts(HashMap::from([
                account(MARIO, &known, false),
                account(ANNA, &unknown, false),
                account(LUCA, &known, true),
            ])))
        })
        .clone()
}

/// A throttle that slows a name's logins after one failure and locks a name and source pair
/// after two, so that one session reaches every verdict.
pub fn throttle() -> Arc<pec_ports::MemoryThrottle> {
    Arc::new(pec_ports::MemoryThrottle::new(ThrottlePolicy {
        window: chrono::Duration::minutes(15),
        pair_failures: 2,
        source_failures: 3,
        account_failures: 1,
        lockout: chrono::Duration::minutes(15),
        slowdown: chrono::Duration::from_std(SLOWDOWN).expect("slowdown"),
    }))
}

async fn put(store: &MemoryMailStore, to: &str, folder: &str, body: &[u8], flags: &[&str]) {
    let origin = if folder == INBOX {
        Origin::Delivered
    } else {
        Origin::Appended
    };
    let flags: Flags = flags.iter().map(|f| (*f).to_owned()).collect();
    store
        .append(to, folder, body.to_vec(), flags, chrono::Utc::now(), origin)
        .await
        .expect("seed message");
}

/// The three mailboxes: MARIO's INBOX has three messages (one seen), Sent and Drafts one
/// each, and a quota 4 KiB over what is used (so APPEND and COPY can run out of it); ANNA's
/// and LUCA's have messages of their own.
pub async fn mailboxes() -> Arc<MemoryMailStore> {
    let store = Arc::new(MemoryMailStore::new());
    for a in [MARIO, ANNA, LUCA] {
        store.create_mailbox(a, 1024 * 1024);
    }
    put(&store, MARIO, INBOX, FIRST, &["\\Seen"]).await;
    put(&store, MARIO, INBOX, SECOND, &[]).await;
    put(&store, MARIO, INBOX, DOTS, &["\\Flagged", "$label1"]).await;
    put(&store, MARIO, "Sent", SENT, &["\\Seen"]).await;
    put(&store, MARIO, "Drafts", DRAFT, &["\\Draft"]).await;
    put(&store, ANNA, INBOX, ANNA_SECRET, &[]).await;
    put(&store, ANNA, "Sent", SENT, &["\\Seen"]).await;
    put(&store, LUCA, INBOX, LUCA_SECRET, &["\\Seen"]).await;
    let used = store.quota(MARIO).await.expect("quota").used;
    store.create_mailbox(MARIO, used + 4096);
    store
}

/// Everything a mailbox holds, as the store reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub folders: Vec<pec_ports::mailstore::FolderInfo>,
    pub messages: BTreeMap<String, Vec<(MessageMeta, Vec<u8>)>>,
    pub used: u64,
    pub limit: u64,
    pub changes: u64,
}

pub async fn snapshot(store: &MemoryMailStore, address: &str) -> Snapshot {
    let folders = store.folders(address).await.expect("folders");
    let mut messages = BTreeMap::new();
    for f in &folders {
        let mut list = Vec::new();
        for meta in store.messages(address, &f.name).await.expect("messages") {
            let bytes = store
                .read(address, &f.name, meta.uid)
                .await
                .expect("read")
                .expect("listed message exists");
            list.push((meta, bytes));
        }
        messages.insert(f.name.clone(), list);
    }
    let quota = store.quota(address).await.expect("quota");
    Snapshot {
        folders,
        messages,
        used: quota.used,
        limit: quota.limit,
        changes: store.change_counter(address).await.expect("counter"),
    }
}

// ---------------------------------------------------------------------------------------
// The script and the client.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Write(Vec<u8>),
    Pause,
    Deliver,
    Expunge,
}

pub struct Script {
    /// Bit 0 of the options byte.
    pub implicit_tls: bool,
    /// Bit 1.
    pub keep_open: bool,
    pub buffer: usize,
    pub steps: Vec<Step>,
    /// Every octet the client writes, in order.
    pub sent: Vec<u8>,
}

pub fn script(data: &[u8]) -> Option<Script> {
    let (&options, rest) = data.split_first()?;
    let mut steps = Vec::new();
    let mut chunk = Vec::new();
    let mut sent = Vec::new();
    let mut i = 0;
    let flush = |chunk: &mut Vec<u8>, steps: &mut Vec<Step>| {
        if !chunk.is_empty() {
            steps.push(Step::Write(std::mem::take(chunk)));
        }
    };
    while i < rest.len() {
        if rest[i] != 0xFF {
            chunk.push(rest[i]);
            sent.push(rest[i]);
            i += 1;
            continue;
        }
        let step = rest.get(i + 1).copied();
        i += 2;
        if step == Some(0) {
            chunk.push(0xFF);
            sent.push(0xFF);
            continue;
        }
        flush(&mut chunk, &mut steps);
        steps.push(match step {
            Some(b'D') => Step::Deliver,
            Some(b'X') => Step::Expunge,
            _ => Step::Pause,
        });
    }
    flush(&mut chunk, &mut steps);
    Some(Script {
        implicit_tls: options & 1 == 1,
        keep_open: options & 2 == 2,
        buffer: BUFFERS[usize::from((options >> 2) & 7)],
        steps,
        sent,
    })
}

/// What the provider and the other client did to MARIO's INBOX during the session.
#[derive(Debug, Default)]
pub struct Outside {
    /// UIDs of the messages delivered during the session.
    pub delivered: Vec<u32>,
    /// UIDs another client expunged.
    pub expunged: BTreeSet<u32>,
}

/// The longest a script may keep a session going, on the paused clock: each pause and step
/// takes a millisecond, each login may be slowed, and after the client's last octet the
/// server has its idle timeout to end the session.
pub fn time_bound(script: &Script) -> Duration {
    Duration::from_millis(script.steps.len() as u64 + 1)
        + SLOWDOWN * 16
        + LOGIN_TIMEOUT
        + IDLE_TIMEOUT
}

/// Plays `script` against `session` (which serves the other end of the connection) and
/// returns every octet the server wrote. Panics if the session outlives [`time_bound`].
pub fn converse<F>(
    script: &Script,
    store: &Arc<MemoryMailStore>,
    session: impl FnOnce(tokio::io::DuplexStream) -> F,
) -> (Vec<u8>, Outside)
where
    F: std::future::Future<Output = ()>,
{
    let (server_io, client_io) = tokio::io::duplex(script.buffer);
    let session = session(server_io);
    let bound = time_bound(script);
    runtime().block_on(async {
        let (mut rd, mut wr) = tokio::io::split(client_io);
        let writer = async {
            let mut outside = Outside::default();
            let pause = || tokio::time::sleep(Duration::from_millis(1));
            for step in &script.steps {
                match step {
                    Step::Write(bytes) => {
                        if wr.write_all(bytes).await.is_err() {
                            // The server closed the connection.
                            break;
                        }
                    }
                    Step::Pause => pause().await,
                    Step::Deliver => {
                        let appended = store
                            .append(
                                MARIO,
                                INBOX,
                                NEW.to_vec(),
                                Flags::new(),
                                chrono::Utc::now(),
                                Origin::Delivered,
                            )
                            .await;
                        if let Ok(a) = appended {
                            outside.delivered.push(a.uid);
                        }
                        pause().await;
                    }
                    Step::Expunge => {
                        let oldest = store.messages(MARIO, INBOX).await.expect("messages");
                        if let Some(m) = oldest.first() {
                            let deleted = Flags::from([DELETED.to_owned()]);
                            store
                                .store_flags(MARIO, INBOX, &[m.uid], FlagChange::Add, &deleted)
                                .await
                                .expect("flag");
                            let gone = store
                                .expunge(MARIO, INBOX, Some(&[m.uid]))
                                .await
                                .expect("expunge");
                            outside.expunged.extend(gone);
                        }
                        pause().await;
                    }
                }
            }
            if !script.keep_open {
                let _ = wr.shutdown().await;
            }
            (wr, outside)
        };
        let reader = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let all = async {
            let ((), (wr, outside), out) = tokio::join!(session, writer, reader);
            drop(wr);
            (out, outside)
        };
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(bound, all).await {
            Ok(done) => done,
            Err(_) => panic!(
                "the session did not end within {bound:?} (started {started:?}); keep_open={}",
                script.keep_open
            ),
        }
    })
}

/// With `PEC_FUZZ_SHOW` set (e.g. when running one input by hand), prints what the client
/// sent and what the server answered.
pub fn trace(script: &Script, out: &[u8]) {
    if showing() {
        eprintln!(
            "--- client (implicit TLS: {}, keep open: {}, buffer: {}) ---\n{}\n--- server ---\n{}",
            script.implicit_tls,
            script.keep_open,
            script.buffer,
            String::from_utf8_lossy(&script.sent),
            String::from_utf8_lossy(out)
        );
    }
}

fn showing() -> bool {
    static SHOW: OnceLock<bool> = OnceLock::new();
    *SHOW.get_or_init(|| std::env::var_os("PEC_FUZZ_SHOW").is_some())
}

/// Checks the heap the session took against [`memory_bound`] (printed with `PEC_FUZZ_SHOW`).
pub fn check_memory(base: usize, input_len: usize) {
    let peak = meter_peak(base);
    if showing() {
        eprintln!("--- heap peak: {peak} octets for {input_len} octets of input ---");
    }
    assert!(
        peak <= memory_bound(input_len),
        "the session took {peak} octets of heap for {input_len} octets of input"
    );
}

/// Shows server output in a panic message (at most 4 KiB of it, the end).
pub fn show(out: &[u8]) -> String {
    let from = out.len().saturating_sub(4096);
    String::from_utf8_lossy(&out[from..]).into_owned()
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
