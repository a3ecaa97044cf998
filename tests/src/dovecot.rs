//! Debian's Dovecot as a test server we did not write: one instance in a temporary directory,
//! IMAP with STARTTLS and IMAPS on 127.0.0.1 (free ports), one user with a plain password over
//! a Maildir the test fills, a self-signed certificate for `localhost`. Stopped on drop.
//!
//! As root, the whole instance runs as `nobody` (Dovecot refuses to give mail access to root),
//! as `benches/imap.sh` runs its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A running Dovecot.
pub struct Dovecot {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// IMAP (STARTTLS required before LOGIN).
    pub imap_port: u16,
    /// IMAPS.
    pub imaps_port: u16,
    /// The server certificate (PEM), to trust.
    pub cert: PathBuf,
}

fn binary() -> Result<PathBuf> {
    for p in ["/usr/sbin/dovecot", "/usr/local/sbin/dovecot"] {
        if Path::new(p).exists() {
            return Ok(p.into());
        }
    }
    let out = Command::new("sh")
        .args(["-c", "command -v dovecot"])
        .output()
        .context("looking for dovecot")?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if path.is_empty() {
        bail!("dovecot is not installed: infra/local/install.sh dovecot (part of 'all')");
    }
    Ok(path.into())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn id(flag: &str, user: Option<&str>) -> Result<String> {
    let mut c = Command::new("id");
    c.arg(flag);
    if let Some(u) = user {
        c.arg(u);
    }
    let out = c.output().context("id")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl Dovecot {
    /// Starts Dovecot for `user` / `password` over the Maildir `fill` writes into the directory
    /// it is given (Maildir++: `cur/` for INBOX, `.Name/` for each other folder). Folders named
    /// in `special_use` (name, `\Sent`...) announce that use.
    pub fn start(
        user: &str,
        password: &str,
        special_use: &[(&str, &str)],
        fill: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Dovecot> {
        let bin = binary()?;
        let dir = tempfile::Builder::new().prefix("pec-dovecot.").tempdir()?;
        let d = dir.path();
        for sub in ["run", "state", "index", "home", "maildir"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        fill(&d.join("maildir"))?;

        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .context("a certificate for Dovecot")?;
        std::fs::write(d.join("cert.pem"), cert.cert.pem())?;
        std::fs::write(d.join("key.pem"), cert.signing_key.serialize_pem())?;
        std::fs::write(d.join("passwd"), format!("{user}:{{PLAIN}}{password}\n"))?;

        let root = id("-u", None)? == "0";
        let (login, group) = if root {
            ("nobody".to_owned(), id("-gn", Some("nobody"))?)
        } else {
            (id("-un", None)?, id("-gn", None)?)
        };
        let uid = id("-u", Some(&login))?;
        let gid = id("-g", Some(&login))?;
        let (imap_port, imaps_port) = (free_port()?, free_port()?);
        let mailboxes: String = special_use
            .iter()
            .map(|(name, use_)| {
                format!("  mailbox \"{name}\" {{\n    special_use = {use_}\n  }}\n")
            })
            .collect();
        let p = d.display();
        let conf = format!(
            r#"# pec-integration's throwaway Dovecot (tests/src/dovecot.rs)
base_dir = {p}/run
state_dir = {p}/state
instance_name = pec-test-{imaps_port}
log_path = {p}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <{p}/cert.pem
ssl_key = <{p}/key.pem
default_login_user = {login}
default_internal_user = {login}
default_internal_group = {group}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_location = maildir:{p}/maildir:INDEX={p}/index
auth_mechanisms = plain
passdb {{
  driver = passwd-file
  args = username_format=%u {p}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={p}/home
}}
namespace inbox {{
  inbox = yes
  separator = /
{mailboxes}}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"#
        );
        std::fs::write(d.join("dovecot.conf"), conf)?;
        if root {
            let status = Command::new("chown")
                .args(["-R", &format!("{login}:{group}")])
                .arg(d)
                .status()?;
            if !status.success() {
                bail!("chown {} to {login}", d.display());
            }
        }
        let mut cmd = if root {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={uid}"),
                &format!("--regid={gid}"),
                "--clear-groups",
            ])
            .arg(&bin);
            c
        } else {
            Command::new(&bin)
        };
        let log = std::fs::File::create(d.join("foreground.log"))?;
        let child = cmd
            .arg("-c")
            .arg(d.join("dovecot.conf"))
            .arg("-F")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Dovecot {
            child: Some(child),
            imap_port,
            imaps_port,
            cert: d.join("cert.pem"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = [imap_port, imaps_port]
                .iter()
                .all(|p| std::net::TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return Ok(server);
            }
            if let Some(c) = server.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                bail!("dovecot exited at start-up ({status}): {}", server.log());
            }
            if Instant::now() > deadline {
                bail!("dovecot did not listen within 30 s: {}", server.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The Maildir root.
    pub fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    /// Dovecot's logs (start-up and its log file).
    pub fn log(&self) -> String {
        let read = |n: &str| std::fs::read_to_string(self.dir.path().join(n)).unwrap_or_default();
        format!("{}{}", read("foreground.log"), read("dovecot.log"))
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM so the master takes its children with it.
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        self.stop();
    }
}
