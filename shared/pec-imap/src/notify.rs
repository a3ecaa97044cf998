//! Wakes IDLE sessions when their mailbox changes.

use tokio::sync::broadcast;

/// Change notifications by mailbox address. Give it to the store as its
/// [`pec_ports::mailstore::MailboxListener`] (e.g. [`pec_ports::MemoryMailStore::set_listener`]);
/// every session subscribes and filters on its own mailbox.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: broadcast::Sender<String>,
}

impl Default for Notifier {
    fn default() -> Self {
        Notifier::new()
    }
}

impl Notifier {
    /// A notifier keeping up to 1024 undelivered notifications per session (a lagging session
    /// re-reads its folder anyway).
    pub fn new() -> Self {
        Notifier {
            tx: broadcast::channel(1024).0,
        }
    }

    /// Tells every session that `address` changed.
    pub fn notify(&self, address: &str) {
        let _ = self.tx.send(pec_ports::state::norm(address));
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<String> {
        self.tx.subscribe()
    }
}

impl pec_ports::mailstore::MailboxListener for Notifier {
    fn changed(&self, address: &str) {
        self.notify(address);
    }
}
