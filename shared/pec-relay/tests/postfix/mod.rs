//! Debian's Postfix as a third party nobody here wrote (issue #21 item 4, design §9.3): one
//! instance in a temporary directory, `postfix -c <dir> start-fg`, its SMTP server on 127.0.0.1
//! (a free port) with STARTTLS, virtual mailboxes in Maildirs, and optional routes that send a
//! domain's mail to a fixed `[127.0.0.1]:port` (our MX) with a TLS policy. Stopped on drop.
//!
//! Postfix's master must start as root (it then runs its daemons as the `postfix` user and
//! delivers as `nobody`), so the harness needs root; under `CI=true` a missing Postfix or a
//! non-root user fails the test with the reason (`pec_testkit::prereq`).
//!
//! The instance is configured as a *remote* MX would see us: no header rewriting for our
//! connections (`local_header_rewrite_clients` empty), so what it stores is what we sent plus
//! the fields it prepends (`Return-Path`, `X-Original-To`, `Delivered-To`, `Received`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where mail for `domain` goes: our MX on 127.0.0.1.
pub struct Route<'a> {
    pub domain: &'a str,
    pub port: u16,
    /// Postfix's TLS policy for that next hop (`secure match=<name>`, `none`, ...).
    pub tls: &'a str,
}

/// What the instance serves.
pub struct Setup<'a> {
    /// Its host name (`myhostname`, its certificate's name).
    pub hostname: &'a str,
    /// The domain it keeps Maildirs for.
    pub domain: &'a str,
    /// The local parts with a mailbox.
    pub mailboxes: &'a [&'a str],
    /// Domains routed to a fixed next hop.
    pub routes: &'a [Route<'a>],
    /// Domains whose mail is thrown away (bounces nobody reads).
    pub discard: &'a [&'a str],
    /// PEM certificates its SMTP client trusts (our MX's).
    pub trust_pem: &'a str,
}

/// A running Postfix.
pub struct Postfix {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its SMTP server (STARTTLS offered).
    pub port: u16,
    /// Its server certificate (DER), to trust.
    pub cert_der: Vec<u8>,
}

fn binary() -> Result<PathBuf, String> {
    for p in ["/usr/sbin/postfix", "/usr/local/sbin/postfix"] {
        if Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    Err("postfix is not installed: infra/local/install.sh mta (part of 'all')".into())
}

fn root() -> Result<(), String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&out.stdout).trim() == "0" {
        Ok(())
    } else {
        Err("Postfix's master must be started as root (it drops to the postfix user)".into())
    }
}

fn uid_of(user: &str) -> String {
    let out = Command::new("id").args(["-u", user]).output().expect("id");
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !uid.is_empty(),
        "no user {user}: the postfix package creates it"
    );
    uid
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The services Postfix needs, none chrooted (the temporary directory has no copy of /etc).
const MASTER_CF: &str = "\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
";

impl Postfix {
    /// Starts an instance; `None` when Postfix cannot run here and we are not in CI (the
    /// caller returns), a panic with the reason under `CI=true`.
    pub fn start(setup: &Setup) -> Option<Postfix> {
        let bin = pec_testkit::prereq::require("Debian's Postfix", binary())?;
        pec_testkit::prereq::require("root for Postfix's master", root())?;
        let dir = tempfile::Builder::new()
            .prefix("pec-postfix.")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let p = d.display();
        // Its daemons (user postfix) and deliveries (user nobody) walk this path.
        chmod(d, 0o755);
        for sub in ["conf", "queue", "data", "mail"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        chown(&d.join("data"), "postfix");
        chown(&d.join("mail"), "nobody");

        let tls = pec_submit::dev_tls::self_signed(&[setup.hostname]).unwrap();
        std::fs::write(d.join("conf/cert.pem"), &tls.cert_pem).unwrap();
        std::fs::write(d.join("conf/key.pem"), &tls.key_pem).unwrap();
        std::fs::write(d.join("conf/trust.pem"), setup.trust_pem).unwrap();
        let vmailbox: String = setup
            .mailboxes
            .iter()
            .map(|m| format!("{m}@{} {m}/\n", setup.domain))
            .collect();
        std::fs::write(d.join("conf/vmailbox"), vmailbox).unwrap();
        let mut transport = String::new();
        let mut policy = String::new();
        for r in setup.routes {
            transport.push_str(&format!("{} smtp:[127.0.0.1]:{}\n", r.domain, r.port));
            policy.push_str(&format!("[127.0.0.1]:{} {}\n", r.port, r.tls));
        }
        for domain in setup.discard {
            transport.push_str(&format!("{domain} discard:\n"));
        }
        std::fs::write(d.join("conf/transport"), transport).unwrap();
        std::fs::write(d.join("conf/tls_policy"), policy).unwrap();
        let port = free_port();
        std::fs::write(
            d.join("conf/master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n{MASTER_CF}"),
        )
        .unwrap();
        let nobody = uid_of("nobody");
        let main_cf = format!(
            "# pec-relay's throwaway Postfix (shared/pec-relay/tests/postfix/mod.rs)
compatibility_level = 3.6
queue_directory = {p}/queue
data_directory = {p}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {p}
maillog_file = {p}/postfix.log
myhostname = {host}
mydomain = {domain}
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
local_header_rewrite_clients =
smtp_host_lookup = native
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {p}/mail
virtual_mailbox_maps = texthash:{p}/conf/vmailbox
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nobody}
transport_maps = texthash:{p}/conf/transport
smtpd_tls_security_level = may
smtpd_tls_cert_file = {p}/conf/cert.pem
smtpd_tls_key_file = {p}/conf/key.pem
smtpd_tls_received_header = yes
smtp_tls_security_level = may
smtp_tls_CAfile = {p}/conf/trust.pem
smtp_tls_policy_maps = texthash:{p}/conf/tls_policy
smtp_tls_loglevel = 1
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
delay_warning_time = 0
",
            host = setup.hostname,
            domain = setup.domain,
        );
        std::fs::write(d.join("conf/main.cf"), main_cf).unwrap();

        let out = std::fs::File::create(d.join("start-fg.out")).unwrap();
        let child = Command::new(&bin)
            .args(["-c", &format!("{p}/conf"), "start-fg"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("postfix start-fg");
        let mut pf = Postfix {
            bin,
            dir,
            child: Some(child),
            port,
            cert_der: tls.cert_der.to_vec(),
        };
        pf.wait_ready();
        Some(pf)
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "Postfix exited ({status}) before listening:\n{}\n{}",
                    self.file("start-fg.out"),
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "Postfix did not listen on 127.0.0.1:{} within 30 s:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn file(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Its log (`maillog_file`).
    pub fn log(&self) -> String {
        self.file("postfix.log")
    }

    /// The messages delivered to `mailbox` so far, oldest first, as stored (LF line ends).
    pub fn delivered(&self, mailbox: &str) -> Vec<Vec<u8>> {
        let new = self.dir.path().join("mail").join(mailbox).join("new");
        let mut files: Vec<_> = match std::fs::read_dir(&new) {
            Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(_) => return Vec::new(),
        };
        files.sort();
        files.iter().map(|f| std::fs::read(f).unwrap()).collect()
    }

    /// Waits until `mailbox` holds `n` messages.
    pub async fn wait_delivered(&self, mailbox: &str, n: usize) -> Vec<Vec<u8>> {
        self.wait_for(&format!("{n} message(s) in {mailbox}"), || {
            let got = self.delivered(mailbox);
            (got.len() >= n).then_some(got)
        })
        .await
    }

    /// Waits until the log holds a line containing every one of `parts`; returns that line.
    pub async fn wait_log(&self, parts: &[&str]) -> String {
        self.wait_for(&format!("a log line with {parts:?}"), || {
            self.log()
                .lines()
                .find(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_owned)
        })
        .await
    }

    async fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = probe() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Postfix: no {what} within 30 s; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let conf = self.dir.path().join("conf");
        let _ = Command::new(&self.bin)
            .arg("-c")
            .arg(&conf)
            .arg("stop")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, user: &str) {
    let status = Command::new("chown")
        .arg(user)
        .arg(path)
        .status()
        .expect("chown");
    assert!(status.success(), "chown {user} {}", path.display());
}

/// Splits what Postfix stored into the fields it prepended (their names, lower case, in
/// order; a field is counted until the first line that is not one of them or a continuation)
/// and the rest, which must be what the client sent.
pub fn prepended<'a>(stored: &'a [u8], names: &[&str]) -> (Vec<String>, &'a [u8]) {
    let mut fields = Vec::new();
    let mut at = 0;
    while at < stored.len() {
        let end = stored[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(stored.len(), |i| at + i + 1);
        let line = &stored[at..end];
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if fields.is_empty() {
                break;
            }
        } else {
            let name = line
                .split(|&b| b == b':')
                .next()
                .map(|n| String::from_utf8_lossy(n).to_ascii_lowercase())
                .unwrap_or_default();
            if !names.contains(&name.as_str()) {
                break;
            }
            fields.push(name);
        }
        at = end;
    }
    (fields, &stored[at..])
}

/// `bytes` with every CRLF as LF (how a Maildir stores a message).
pub fn lf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\r' && bytes.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

/// `bytes` with every bare LF as CRLF.
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 40);
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    out
}
