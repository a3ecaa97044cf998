//! The selected folder as the session last told the client: sequence numbers, UIDs, flags.

use std::collections::HashMap;
use std::num::NonZeroU32;

use imap_next::imap_types::response::Data;
use imap_next::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use pec_ports::mailstore::{Flags, MessageMeta};

use crate::fetch::flags_item;

/// A selected folder.
pub(crate) struct Selected {
    /// The folder name as stored.
    pub folder: String,
    pub read_only: bool,
    /// Message UIDs in sequence order (sequence number = index + 1).
    pub uids: Vec<u32>,
    /// The flags the client was last told.
    pub flags: HashMap<u32, Flags>,
}

impl Selected {
    pub fn new(folder: String, read_only: bool, messages: &[MessageMeta]) -> Self {
        Selected {
            folder,
            read_only,
            uids: messages.iter().map(|m| m.uid).collect(),
            flags: messages.iter().map(|m| (m.uid, m.flags.clone())).collect(),
        }
    }

    /// The sequence number of `uid`.
    pub fn seq(&self, uid: u32) -> Option<NonZeroU32> {
        let i = self.uids.binary_search(&uid).ok()?;
        NonZeroU32::new(i as u32 + 1)
    }

    /// Brings the view up to the store's `current` messages and returns what to tell the
    /// client: `EXPUNGE`s (only when `expunges` is allowed: not during FETCH, STORE, SEARCH),
    /// `EXISTS` for new messages, `FETCH (FLAGS)` for flags changed elsewhere.
    pub fn sync(&mut self, current: &[MessageMeta], expunges: bool) -> Vec<Data<'static>> {
        let mut out = Vec::new();
        let now: HashMap<u32, &MessageMeta> = current.iter().map(|m| (m.uid, m)).collect();
        if expunges {
            for i in (0..self.uids.len()).rev() {
                let uid = self.uids[i];
                if !now.contains_key(&uid) {
                    self.uids.remove(i);
                    self.flags.remove(&uid);
                    if let Some(seq) = NonZeroU32::new(i as u32 + 1) {
                        out.push(Data::Expunge(seq));
                    }
                }
            }
        }
        let last = self.uids.last().copied().unwrap_or(0);
        let before = self.uids.len();
        for m in current.iter().filter(|m| m.uid > last) {
            self.uids.push(m.uid);
            self.flags.insert(m.uid, m.flags.clone());
        }
        if self.uids.len() != before || !out.is_empty() {
            out.push(Data::Exists(self.uids.len() as u32));
        }
        for m in current {
            let Some(known) = self.flags.get_mut(&m.uid) else {
                continue;
            };
            if *known != m.flags {
                *known = m.flags.clone();
                if let Some(seq) = self.seq(m.uid)
                    && let Ok(items) = vec![flags_item(&m.flags), uid_item(m.uid)].try_into()
                {
                    out.push(Data::Fetch { seq, items });
                }
            }
        }
        out
    }

    /// The UIDs a sequence set names, in increasing order: sequence numbers (`uid == false`)
    /// or UIDs, `*` being the last message (RFC 9051 §6.4.4: a range with `*` names at least
    /// the last message). UIDs that do not exist are left out.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<u32> {
        let Some(&last_uid) = self.uids.last() else {
            return Vec::new();
        };
        let last = if uid {
            last_uid
        } else {
            self.uids.len() as u32
        };
        let value = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => last,
        };
        let mut picked: Vec<u32> = Vec::new();
        for seq in set.0.as_ref() {
            let (lo, hi) = match seq {
                Sequence::Single(s) => (value(s), value(s)),
                Sequence::Range(a, b) => {
                    let (a, b) = (value(a), value(b));
                    (a.min(b), a.max(b))
                }
            };
            if uid {
                let start = self.uids.partition_point(|u| *u < lo);
                let end = self.uids.partition_point(|u| *u <= hi);
                picked.extend_from_slice(&self.uids[start..end]);
            } else {
                let hi = hi.min(last);
                if lo >= 1 && lo <= hi {
                    picked.extend_from_slice(&self.uids[lo as usize - 1..hi as usize]);
                }
            }
        }
        picked.sort_unstable();
        picked.dedup();
        picked
    }
}

/// `UID n` as a FETCH item.
pub(crate) fn uid_item(uid: u32) -> imap_next::imap_types::fetch::MessageDataItem<'static> {
    imap_next::imap_types::fetch::MessageDataItem::Uid(
        NonZeroU32::new(uid).unwrap_or(NonZeroU32::MIN),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pec_ports::mailstore::Origin;

    fn meta(uid: u32) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Flags::new(),
            size: 1,
            internal_date: chrono::DateTime::UNIX_EPOCH,
            origin: Origin::Delivered,
        }
    }

    #[test]
    fn resolve_and_sync() {
        let mut s = Selected::new("INBOX".into(), false, &[meta(3), meta(5), meta(9)]);
        let set = |t: &str| SequenceSet::try_from(t).unwrap();
        assert_eq!(s.resolve(&set("1:*"), false), [3, 5, 9]);
        assert_eq!(s.resolve(&set("2"), false), [5]);
        assert_eq!(s.resolve(&set("4:7"), false), Vec::<u32>::new());
        assert_eq!(s.resolve(&set("4:*"), true), [5, 9]);
        assert_eq!(s.resolve(&set("10:*"), true), [9], "* is at least the last");
        assert_eq!(s.resolve(&set("1,3"), true), [3]);
        let out = s.sync(&[meta(3), meta(9), meta(10)], false);
        assert_eq!(out, vec![Data::Exists(4)], "no EXPUNGE when not allowed");
        let out = s.sync(&[meta(3), meta(9), meta(10)], true);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], Data::Expunge(NonZeroU32::new(2).unwrap()));
        assert_eq!(s.uids, [3, 9, 10]);
    }
}
