//! A throwaway Dovecot with a generated mailbox, for the demo's transfer-in scene: Debian's
//! Dovecot on 127.0.0.1 (pec_integration::dovecot), one user whose Maildir holds N generated
//! messages (pec_integration::mailgen: INBOX, Sent announced as \Sent, and "Posta eliminata").
//! Prints one line `imaps=127.0.0.1:PORT imap=127.0.0.1:PORT cert=PATH` once it listens, then
//! serves until its standard input closes or it is terminated.
//!
//!   cargo run -p pec-integration --example dovecot -- USER PASSWORD MESSAGES

use std::io::Read;

use anyhow::{Context, Result};
use pec_integration::dovecot::Dovecot;
use pec_integration::mailgen::{make_maildir, message, write_maildir};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [user, password, count] = args.as_slice() else {
        anyhow::bail!("usage: dovecot USER PASSWORD MESSAGES");
    };
    let count: usize = count.parse().context("MESSAGES")?;
    let mut server = Dovecot::start(user, password, &[("Sent", "\\Sent")], |root| {
        let folders = ["", ".Sent", ".Posta eliminata"];
        for f in folders {
            make_maildir(&root.join(f))?;
        }
        for i in 0..count {
            let folder = folders[match i % 6 {
                0..=3 => 0,
                4 => 1,
                _ => 2,
            }];
            write_maildir(&root.join(folder), i, &message(33, i, None))?;
        }
        Ok(())
    })?;
    println!(
        "imaps=127.0.0.1:{} imap=127.0.0.1:{} cert={}",
        server.imaps_port,
        server.imap_port,
        server.cert.display()
    );
    // Until stdin closes (or SIGTERM ends the process; the instance's temporary directory
    // then stays in /tmp, and Dovecot exits with its parent gone on the next signal).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    server.stop();
    Ok(())
}
