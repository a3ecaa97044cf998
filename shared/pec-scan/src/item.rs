//! What the walker hands to the engines: one decoded part or archive entry, with where it was.

use std::fmt;

/// One step of a [`PartPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// The n-th (1-based) MIME child, numbered as IMAP does (`BODY[2.1]`).
    Mime(u32),
    /// An archive entry, by its name inside the archive.
    Entry(String),
}

/// Where a part sits in the message: IMAP-style MIME numbers, then `!entry` for each archive
/// level. `1` is the body of a single-part message, `2.1` the first part inside part 2 (or
/// inside the message attached as part 2), `3!docs/a.zip!eicar.com` an entry of a zip inside a
/// zip attached as part 3. The whole input, when it is not a message at all (a bare zip given
/// to `pec scan`), is `message`, and its entries `message!name`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PartPath(Vec<Segment>);

impl PartPath {
    /// The whole message.
    pub fn root() -> Self {
        Self(Vec::new())
    }

    /// This path plus one segment.
    pub fn child(&self, segment: Segment) -> Self {
        let mut v = self.0.clone();
        v.push(segment);
        Self(v)
    }

    /// The segments, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }
}

impl fmt::Display for PartPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("message");
        }
        if matches!(self.0.first(), Some(Segment::Entry(_))) {
            f.write_str("message")?;
        }
        let mut previous_mime = false;
        for segment in &self.0 {
            match segment {
                Segment::Mime(n) => {
                    if previous_mime {
                        f.write_str(".")?;
                    }
                    write!(f, "{n}")?;
                    previous_mime = true;
                }
                Segment::Entry(name) => {
                    write!(f, "!{name}")?;
                    previous_mime = false;
                }
            }
        }
        Ok(())
    }
}

/// One thing to scan: a MIME leaf after transfer decoding, or an archive entry after
/// decompression. Containers (zip files) are items too, scanned after their entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Where it is.
    pub path: PartPath,
    /// The declared MIME type, lower case, without parameters (`""` for archive entries).
    pub content_type: String,
    /// The MIME filename (Content-Disposition `filename`, else Content-Type `name`), or the
    /// archive entry's name; `""` when there is none.
    pub filename: String,
    /// Whether it came out of an archive.
    pub in_archive: bool,
    /// Container levels above it.
    pub depth: u32,
    /// The decoded bytes.
    pub data: Vec<u8>,
}
