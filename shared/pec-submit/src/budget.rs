//! The server-wide bound on the memory held by message data ([`Config::max_data_bytes_in_flight`]).
//!
//! Every session buffers the message it is receiving, then the sink copies it once to store it
//! ([`crate::Submission::stored`], [`crate::mx::Arrival::stored`]). Each transaction therefore
//! holds a [`Share`] of one [`DataBudget`] owned by the server, sized to cover both: **twice the
//! capacity of its receive buffer, plus [`STORE_SLACK`]** ([`data_share`]). The buffer's
//! capacity (not its length) is what is counted, because that is what the allocator holds; the
//! second half covers the copy made to store (at most the message's length, plus the
//! `Return-Path` and `Received` fields, which `STORE_SLACK` covers). A share grows before the
//! buffer does, and the whole share goes back when the transaction ends (stored, refused,
//! `RSET`, a new `EHLO`, `STARTTLS`, the connection dropped or cut): it is an RAII guard, so
//! no path can leak it.
//!
//! The budget is a plain atomic counter, not a semaphore: nothing ever *waits* for it. A
//! transaction that cannot be covered is refused at once with `452 4.3.1` (a waiting session
//! would keep its connection, socket buffers and the client's patience while others finish),
//! so a wait queue would be unused, and bytes are counted exactly, with no unit to round to and
//! no `u32` bound per acquisition.
//!
//! [`Config::max_data_bytes_in_flight`]: crate::Config::max_data_bytes_in_flight

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Room in every share for what the sink adds to the message when it copies it to store (our
/// `Received` field, the `Return-Path` field: a few hundred bytes with the default line bound).
/// Should they be longer, the session tops its share up before calling the sink.
pub const STORE_SLACK: usize = 8 * 1024;

/// What a transaction whose receive buffer holds `capacity` bytes holds against
/// [`Config::max_data_bytes_in_flight`](crate::Config::max_data_bytes_in_flight): the buffer,
/// the copy made to store it, and [`STORE_SLACK`]. A client that declares `SIZE=n` at `MAIL`
/// (and sends no more than `n` bytes) holds exactly `data_share(n)`; one that does not may hold
/// up to `data_share(2 × n)`, the buffer growing by doubling. For the largest message to be
/// accepted at all, the budget must be at least `data_share(max_message_bytes)`.
pub const fn data_share(capacity: usize) -> usize {
    capacity.saturating_mul(2).saturating_add(STORE_SLACK)
}

/// A byte budget shared by every session of one server.
#[derive(Debug)]
pub(crate) struct DataBudget {
    limit: usize,
    used: AtomicUsize,
}

impl DataBudget {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held by all shares together.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// An empty share (holds nothing until it grows).
    pub fn share(self: &Arc<Self>) -> Share {
        Share {
            budget: Arc::clone(self),
            held: 0,
        }
    }

    /// Takes `n` more bytes if the limit allows it.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        // Never below zero, whatever happens: a share only gives back what it took.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }
}

/// One transaction's part of a [`DataBudget`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Share {
    budget: Arc<DataBudget>,
    held: usize,
}

impl Share {
    /// Grows the share to at least `bytes`; `false` (and the share unchanged) if the budget
    /// cannot cover it now.
    pub fn hold_at_least(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            return true;
        }
        let more = bytes - self.held;
        if self.budget.try_take(more) {
            self.held = bytes;
            true
        } else {
            false
        }
    }

    /// Grows the share to cover a receive buffer of `capacity` bytes and the copy made to store
    /// it ([`data_share`]).
    pub fn cover_buffer(&mut self, capacity: usize) -> bool {
        self.hold_at_least(data_share(capacity))
    }

    /// Gives everything back now (the buffer it covered was dropped).
    pub fn release(&mut self) {
        self.budget.give_back(self.held);
        self.held = 0;
    }

    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_bounded_together_and_given_back_on_drop() {
        let budget = DataBudget::new(100);
        let mut a = budget.share();
        let mut b = budget.share();
        assert!(a.hold_at_least(60));
        assert!(!b.hold_at_least(41), "60 + 41 > 100");
        assert_eq!(b.held(), 0, "a refused share is unchanged");
        assert!(b.hold_at_least(40));
        assert_eq!(budget.in_use(), 100);
        // Growing takes only the difference; shrinking requests are no-ops.
        assert!(a.hold_at_least(50));
        assert_eq!(a.held(), 60);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        assert!(b.hold_at_least(100));
        b.release();
        assert_eq!(budget.in_use(), 0);
        assert!(b.hold_at_least(10));
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn buffer_shares_count_the_copy_and_never_overflow() {
        assert_eq!(data_share(1000), 2000 + STORE_SLACK);
        assert_eq!(data_share(usize::MAX), usize::MAX);
        let budget = DataBudget::new(data_share(1000));
        let mut a = budget.share();
        assert!(a.cover_buffer(1000));
        assert!(!a.cover_buffer(1001));
        let mut b = budget.share();
        assert!(!b.hold_at_least(usize::MAX));
        assert!(!b.cover_buffer(1));
        drop(a);
        assert!(b.cover_buffer(1));
    }

    #[test]
    fn concurrent_shares_never_exceed_the_limit() {
        let budget = DataBudget::new(1000);
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let budget = Arc::clone(&budget);
                std::thread::spawn(move || {
                    let mut taken = 0;
                    for _ in 0..1000 {
                        let mut s = budget.share();
                        if s.hold_at_least(300) {
                            taken += 1;
                            assert!(budget.in_use() <= budget.limit());
                        }
                    }
                    taken
                })
            })
            .collect();
        let taken: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert!(taken > 0);
        assert_eq!(budget.in_use(), 0);
    }
}
