//! The exchange itself: a sent message in, per recipient domain one arrival out -- in a local
//! provider's raw bucket exactly as SES receiving would write it, or in the outbox folder of an
//! ordinary domain.
//!
//! Idempotent: each sent message has a journal entry in `<dir>/seen/` (its inbound id and
//! arrival time, fixed on first sight, so a re-run rebuilds the same bytes), written before any
//! delivery and marked done after all of them; S3 writes are conditional (`If-None-Match: *`)
//! and outbox files are created only if absent. A message already done is skipped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use pec_ports::{ObjectStore, PutOutcome};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::headers::{Arrival, header_recipients, rewrite_ids, with_arrival_headers};
use crate::localstack::SentMail;
use crate::routing::{Destination, Routes, bare_address, route, valid_domain};

/// The SES receiving prefix of a raw bucket.
pub const INBOUND_PREFIX: &str = "inbound/";

/// Options of the exchange.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Do what real SES does and LocalStack does not: a new `Message-ID` and `Date` on send.
    pub rewrite_ids: bool,
}

/// The exchange over an object store (S3, or memory in tests) and a state directory.
pub struct Exchange<S> {
    store: S,
    routes: Routes,
    dir: PathBuf,
    options: Options,
}

/// What happened to one arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub destination: Destination,
    /// `s3://bucket/inbound/<id>.eml` or the outbox file.
    pub location: String,
    /// Why nothing new was written, if so (already there, duplicate).
    pub note: Option<String>,
}

/// What `deliver` did with one sent message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not sent by one of the providers routed here: left alone.
    NotOurs,
    /// Delivered on an earlier run.
    AlreadyDone,
    /// Delivered now.
    Delivered(Report),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The object name every arrival of this message has (`inbound/<id>.eml`, outbox `<id>.eml`).
    pub inbound_id: String,
    pub deliveries: Vec<Delivery>,
    /// Recipients that are not addresses (nothing delivered to them).
    pub unusable: Vec<String>,
    /// The envelope was not recorded by LocalStack: recipients were read from To/Cc/Bcc.
    pub recipients_from_headers: bool,
}

/// The inbound envelope written beside each inbound message (`inbound/<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundEnvelope {
    pub version: u32,
    pub recipients: Vec<String>,
    pub source: String,
    pub received_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct JournalEntry {
    ses_message_id: String,
    inbound_id: String,
    received_at: DateTime<Utc>,
    done: bool,
}

/// A name made of `[A-Za-z0-9-]` only (S3 keys, file names); a changed or long input gets a
/// hash suffix so two inputs never share a name.
pub fn safe_name(text: &str) -> String {
    let kept: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(80)
        .collect();
    if kept == text && !kept.is_empty() {
        kept
    } else {
        format!("{kept}-{}", &hex(&Sha256::digest(text.as_bytes()))[..16])
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An inbound id the receiving point accepts (pec-core's `submission::valid_id`): 1..=64
/// characters of `[A-Za-z0-9-]`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// `<time>-<tag>` (at most 64 characters): sorts by arrival time (milliseconds, UTC). A tag
/// longer than 44 characters or not of `[A-Za-z0-9-]` (an SES message id has 60) is shortened
/// to its first 30 such characters and a hash of the whole.
pub fn time_id(at: DateTime<Utc>, tag: &str) -> String {
    let ok = |t: &str| {
        (1..=44).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let tag = if ok(tag) {
        tag.to_string()
    } else {
        let kept: String = tag
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(30)
            .collect();
        format!("{kept}-{}", &hex(&Sha256::digest(tag.as_bytes()))[..12])
    };
    format!("{}-{tag}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

/// Creates `path` with `bytes` unless it exists (written aside, then linked: never half a file).
fn create_file(path: &Path, bytes: &[u8]) -> Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let dir = path.parent().context("a file path without directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

/// Replaces `path` atomically.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file path without directory")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(".journal.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

impl<S: ObjectStore> Exchange<S> {
    /// `dir` holds the exchange's own state (`seen/`, `outbox/`).
    pub fn new(store: S, routes: Routes, dir: impl Into<PathBuf>, options: Options) -> Self {
        Self {
            store,
            routes,
            dir: dir.into(),
            options,
        }
    }

    pub fn routes(&self) -> &Routes {
        &self.routes
    }

    /// Routes from now on (the tenants' domains change while the exchange runs).
    pub fn set_routes(&mut self, routes: Routes) {
        self.routes = routes;
    }

    /// The outbox folder of an ordinary domain.
    pub fn outbox(&self, domain: &str) -> PathBuf {
        self.dir.join("outbox").join(domain)
    }

    fn journal_path(&self, ses_id: &str) -> PathBuf {
        self.dir
            .join("seen")
            .join(format!("{}.json", safe_name(ses_id)))
    }

    fn journal(&self, ses_id: &str) -> Result<Option<JournalEntry>> {
        let path = self.journal_path(ses_id);
        match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<JournalEntry>(&bytes) {
                Ok(entry) if entry.ses_message_id == ses_id && valid_id(&entry.inbound_id) => {
                    Ok(Some(entry))
                }
                _ => bail!(
                    "{} is not a journal entry of {ses_id}: remove it to deliver again",
                    path.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save_journal(&self, entry: &JournalEntry) -> Result<()> {
        replace_file(
            &self.journal_path(&entry.ses_message_id),
            &serde_json::to_vec_pretty(entry)?,
        )
    }

    /// Delivers one message LocalStack's SES sent (see the module doc); `now` is the arrival
    /// time of a message seen for the first time.
    pub async fn deliver(&self, mail: &SentMail, now: DateTime<Utc>) -> Result<Outcome> {
        let Some(source) = bare_address(&mail.source) else {
            return Ok(Outcome::NotOurs);
        };
        if self.routes.sent_by_us(&source).is_none() {
            return Ok(Outcome::NotOurs);
        }
        let entry = match self.journal(&mail.id)? {
            Some(e) if e.done => return Ok(Outcome::AlreadyDone),
            Some(e) => e,
            None => {
                let entry = JournalEntry {
                    ses_message_id: mail.id.clone(),
                    inbound_id: time_id(now, &mail.id),
                    received_at: now,
                    done: false,
                };
                self.save_journal(&entry)?;
                entry
            }
        };
        let (recipients, from_headers) = match &mail.destinations {
            Some(d) => (d.clone(), false),
            None => (header_recipients(&mail.raw), true),
        };
        let (destinations, unusable) = route(&self.routes, &recipients);
        let sent = if self.options.rewrite_ids {
            rewrite_ids(&mail.raw, &mail.id, &mail.region, mail.sent_at)
        } else {
            mail.raw.clone()
        };
        let content = hex(&Sha256::digest(&mail.raw));
        let mut deliveries = Vec::new();
        for destination in destinations {
            // Without the envelope, a provider that sent one copy per recipient domain (same
            // bytes, same To/Cc) would have each copy delivered to every domain: deliver the
            // same bytes to a domain once.
            let marker = self.dir.join("seen-content").join(format!(
                "{}-{}",
                &content[..32],
                destination.domain()
            ));
            if from_headers && marker.exists() {
                deliveries.push(Delivery {
                    location: String::new(),
                    note: Some(
                        "the same message was already delivered to this domain (envelope read from the headers)"
                            .into(),
                    ),
                    destination,
                });
                continue;
            }
            let mut delivery = match &destination {
                Destination::Provider {
                    stack, recipients, ..
                } => {
                    self.arrive(
                        stack,
                        &entry.inbound_id,
                        &source,
                        recipients,
                        &sent,
                        entry.received_at,
                    )
                    .await?
                }
                Destination::Ordinary { domain, recipients } => {
                    self.to_outbox(domain, &entry.inbound_id, &source, recipients, &sent, mail)?
                }
            };
            if from_headers {
                create_file(&marker, mail.id.as_bytes())?;
            }
            delivery.destination = destination;
            deliveries.push(delivery);
        }
        self.save_journal(&JournalEntry {
            done: true,
            ..entry.clone()
        })?;
        Ok(Outcome::Delivered(Report {
            inbound_id: entry.inbound_id,
            deliveries,
            unusable,
            recipients_from_headers: from_headers,
        }))
    }

    /// Writes `inbound/<id>.eml` (with SES's arrival headers) then `inbound/<id>.json` into the
    /// raw bucket of `stack`, each only if absent.
    async fn arrive(
        &self,
        stack: &str,
        id: &str,
        source: &str,
        recipients: &[String],
        message: &[u8],
        received_at: DateTime<Utc>,
    ) -> Result<Delivery> {
        let provider = self
            .routes
            .providers()
            .find(|p| p.stack == stack)
            .with_context(|| format!("no route to stack {stack}"))?;
        let stored = with_arrival_headers(
            message,
            &Arrival {
                return_path: source,
                smtp_id: id,
                region: &provider.region,
                received_at,
            },
        );
        let envelope = InboundEnvelope {
            version: 1,
            recipients: recipients.to_vec(),
            source: source.to_string(),
            received_at: received_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        };
        let eml_key = format!("{INBOUND_PREFIX}{id}.eml");
        let json_key = format!("{INBOUND_PREFIX}{id}.json");
        let eml = self
            .store
            .put_if_absent(&provider.raw_bucket, &eml_key, stored, "message/rfc822")
            .await?;
        // The envelope last: its notification starts ingress, which then finds the message.
        let json = self
            .store
            .put_if_absent(
                &provider.raw_bucket,
                &json_key,
                serde_json::to_vec(&envelope)?,
                "application/json",
            )
            .await?;
        Ok(Delivery {
            destination: Destination::Ordinary {
                domain: String::new(),
                recipients: Vec::new(),
            },
            location: format!("s3://{}/{eml_key}", provider.raw_bucket),
            note: (eml == PutOutcome::AlreadyExists && json == PutOutcome::AlreadyExists)
                .then(|| "already there".to_string()),
        })
    }

    fn to_outbox(
        &self,
        domain: &str,
        id: &str,
        source: &str,
        recipients: &[String],
        message: &[u8],
        mail: &SentMail,
    ) -> Result<Delivery> {
        if !valid_domain(domain) {
            bail!("{domain:?} cannot name an outbox folder");
        }
        let folder = self.outbox(domain);
        let eml = folder.join(format!("{id}.eml"));
        let created = create_file(&eml, message)?;
        let envelope = serde_json::json!({
            "version": 1,
            "recipients": recipients,
            "source": source,
            "sent_at": mail.sent_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            "ses_message_id": mail.id,
        });
        create_file(
            &folder.join(format!("{id}.json")),
            &serde_json::to_vec_pretty(&envelope)?,
        )?;
        Ok(Delivery {
            destination: Destination::Ordinary {
                domain: String::new(),
                recipients: Vec::new(),
            },
            location: eml.display().to_string(),
            note: (!created).then(|| "already there".to_string()),
        })
    }

    /// Ordinary mail from outside (a non-PEC sender, or a fixture) arriving at local providers
    /// through SES receiving: one `inbound/<id>.eml` + `.json` per provider of the recipients.
    /// Every recipient must be in a domain of a local provider; nothing is written otherwise.
    pub async fn inject(
        &self,
        from: &str,
        to: &[String],
        raw: &[u8],
        id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Delivery>> {
        let source =
            bare_address(from).with_context(|| format!("--from {from:?} is not an address"))?;
        if to.is_empty() {
            bail!("give at least one --to");
        }
        let id = match id {
            Some(id) if valid_id(id) => id.to_string(),
            Some(id) => bail!("--id {id:?}: use 1 to 64 characters of [A-Za-z0-9-]"),
            None => {
                let mut h = Sha256::new();
                h.update(source.as_bytes());
                for t in to {
                    h.update(b"\0");
                    h.update(t.as_bytes());
                }
                h.update(b"\0");
                h.update(raw);
                time_id(now, &format!("inject-{}", &hex(&h.finalize())[..12]))
            }
        };
        let (destinations, unusable) = route(&self.routes, to);
        if !unusable.is_empty() {
            bail!("not addresses: {}", unusable.join(", "));
        }
        let foreign: Vec<&str> = destinations
            .iter()
            .filter(|d| matches!(d, Destination::Ordinary { .. }))
            .map(|d| d.domain())
            .collect();
        if !foreign.is_empty() {
            let ours: Vec<&str> = self.routes.providers().map(|p| p.domain.as_str()).collect();
            bail!(
                "no local provider manages {} (local providers: {})",
                foreign.join(", "),
                ours.join(", ")
            );
        }
        let mut deliveries = Vec::new();
        for destination in destinations {
            if let Destination::Provider {
                stack, recipients, ..
            } = &destination
            {
                let mut d = self
                    .arrive(stack, &id, &source, recipients, raw, now)
                    .await?;
                d.destination = destination.clone();
                deliveries.push(d);
            }
        }
        Ok(deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Provider;
    use chrono::TimeZone;
    use pec_ports::MemoryStore;

    const SENT: &str = "From: posta-certificata@pec.example.test\r\n\
To: anna@pec.altro.test, carla@ordinaria.test\r\n\
Subject: POSTA CERTIFICATA: prova\r\n\
Message-ID: <opec1@pec.example.test>\r\n\
Date: Mon, 23 Nov 2026 10:00:00 +0100\r\n\
\r\n\
corpo\r\n";

    fn routes() -> Routes {
        Routes::new(vec![
            Provider {
                stack: "pec-local".into(),
                domain: "pec.example.test".into(),
                raw_bucket: "raw-a".into(),
                region: "eu-south-1".into(),
                state_table: None,
            },
            Provider {
                stack: "pec-b".into(),
                domain: "pec.altro.test".into(),
                raw_bucket: "raw-b".into(),
                region: "eu-south-1".into(),
                state_table: None,
            },
        ])
        .unwrap()
    }

    fn t(s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 4, 12, s).unwrap()
    }

    fn mail(id: &str, destinations: Option<Vec<&str>>) -> SentMail {
        SentMail {
            id: id.into(),
            region: "eu-south-1".into(),
            source: "posta-certificata@pec.example.test".into(),
            raw: SENT.as_bytes().to_vec(),
            sent_at: t(38),
            destinations: destinations.map(|d| d.into_iter().map(str::to_string).collect()),
        }
    }

    fn exchange(dir: &Path, rewrite_ids: bool) -> Exchange<MemoryStore> {
        Exchange::new(MemoryStore::new(), routes(), dir, Options { rewrite_ids })
    }

    fn body(raw: &[u8]) -> &[u8] {
        let (_, end) = crate::headers::header_fields(raw);
        &raw[end..]
    }

    #[tokio::test]
    async fn delivers_per_domain_once() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), false);
        let m = mail(
            "ses-1",
            Some(vec!["anna@pec.altro.test", "carla@ordinaria.test"]),
        );
        let Outcome::Delivered(report) = ex.deliver(&m, t(40)).await.unwrap() else {
            panic!("not delivered")
        };
        assert_eq!(report.inbound_id, "20261123T041240000Z-ses-1");
        assert!(!report.recipients_from_headers);
        assert_eq!(report.deliveries.len(), 2);
        let id = &report.inbound_id;
        assert_eq!(
            ex.store.keys("raw-b"),
            [format!("inbound/{id}.eml"), format!("inbound/{id}.json")]
        );
        assert!(ex.store.keys("raw-a").is_empty());
        let eml = ex
            .store
            .object("raw-b", &format!("inbound/{id}.eml"))
            .unwrap();
        assert!(
            eml.ends_with(SENT.as_bytes()),
            "bytes preserved after the SES headers"
        );
        assert!(
            eml.starts_with(b"Return-Path: <posta-certificata@pec.example.test>\r\nReceived: ")
        );
        let envelope: InboundEnvelope = serde_json::from_slice(
            &ex.store
                .object("raw-b", &format!("inbound/{id}.json"))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            envelope,
            InboundEnvelope {
                version: 1,
                recipients: vec!["anna@pec.altro.test".into()],
                source: "posta-certificata@pec.example.test".into(),
                received_at: "2026-11-23T04:12:40.000Z".into(),
            }
        );
        let outboxed =
            std::fs::read(ex.outbox("ordinaria.test").join(format!("{id}.eml"))).unwrap();
        assert_eq!(outboxed, SENT.as_bytes());

        // Seen again (not consumed, or a second exchange): nothing more.
        let writes = ex.store.writes();
        assert_eq!(ex.deliver(&m, t(50)).await.unwrap(), Outcome::AlreadyDone);
        assert_eq!(ex.store.writes(), writes);
    }

    #[tokio::test]
    async fn an_interrupted_delivery_is_finished_with_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), false);
        let m = mail("ses-2", Some(vec!["anna@pec.altro.test"]));
        ex.deliver(&m, t(40)).await.unwrap();
        let id = "20261123T041240000Z-ses-2";
        let eml = ex
            .store
            .object("raw-b", &format!("inbound/{id}.eml"))
            .unwrap();
        // As if it stopped after the .eml: journal not done, .json missing.
        let journal = ex.journal_path("ses-2");
        let entry: JournalEntry =
            serde_json::from_slice(&std::fs::read(&journal).unwrap()).unwrap();
        ex.save_journal(&JournalEntry {
            done: false,
            ..entry
        })
        .unwrap();
        let fresh = MemoryStore::new();
        fresh.insert("raw-b", &format!("inbound/{id}.eml"), eml.clone());
        let ex = Exchange { store: fresh, ..ex };
        let Outcome::Delivered(report) = ex.deliver(&m, t(59)).await.unwrap() else {
            panic!()
        };
        assert_eq!(report.inbound_id, id, "the id of the first attempt");
        assert_eq!(ex.store.writes(), 1, "only the missing .json");
        assert_eq!(
            ex.store
                .object("raw-b", &format!("inbound/{id}.eml"))
                .unwrap(),
            eml
        );
    }

    #[tokio::test]
    async fn without_the_envelope_headers_decide_and_copies_per_domain_collapse() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), false);
        // A provider sent one copy per domain; LocalStack did not record the Destinations.
        let Outcome::Delivered(first) = ex.deliver(&mail("copy-1", None), t(40)).await.unwrap()
        else {
            panic!()
        };
        assert!(first.recipients_from_headers);
        assert!(first.deliveries.iter().all(|d| d.note.is_none()));
        let Outcome::Delivered(second) = ex.deliver(&mail("copy-2", None), t(41)).await.unwrap()
        else {
            panic!()
        };
        assert_eq!(second.deliveries.len(), 2);
        assert!(second.deliveries.iter().all(|d| d.note.is_some()));
        assert_eq!(ex.store.keys("raw-b").len(), 2, "one arrival at B");
        assert_eq!(
            std::fs::read_dir(ex.outbox("ordinaria.test"))
                .unwrap()
                .count(),
            2,
            "one .eml + .json in the outbox"
        );
    }

    #[tokio::test]
    async fn rewritten_ids_keep_the_body() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), true);
        let Outcome::Delivered(r) = ex
            .deliver(&mail("ses-3", Some(vec!["anna@pec.altro.test"])), t(40))
            .await
            .unwrap()
        else {
            panic!()
        };
        let eml = ex
            .store
            .object("raw-b", &format!("inbound/{}.eml", r.inbound_id))
            .unwrap();
        let text = String::from_utf8(eml.clone()).unwrap();
        assert!(text.contains("\r\nMessage-ID: <ses-3@eu-south-1.amazonses.com>\r\n"));
        assert!(text.contains("\r\nDate: Mon, 23 Nov 2026 04:12:38 +0000\r\n"));
        assert!(!text.contains("opec1@pec.example.test"));
        assert_eq!(body(&eml), body(SENT.as_bytes()));
    }

    #[tokio::test]
    async fn mail_of_others_and_odd_records_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), false);
        for source in ["someone@ordinaria.test", "", "not an address", "<@>"] {
            let m = SentMail {
                source: source.into(),
                ..mail("x", None)
            };
            assert_eq!(ex.deliver(&m, t(1)).await.unwrap(), Outcome::NotOurs);
        }
        // Ours, but nobody to deliver to: done, nothing written.
        let m = SentMail {
            raw: b"garbage without headers".to_vec(),
            ..mail("y", None)
        };
        let Outcome::Delivered(r) = ex.deliver(&m, t(2)).await.unwrap() else {
            panic!()
        };
        assert!(r.deliveries.is_empty());
        let m = mail("../../etc/z", Some(vec!["bad", "anna@pec.altro.test"]));
        let Outcome::Delivered(r) = ex.deliver(&m, t(3)).await.unwrap() else {
            panic!()
        };
        assert_eq!(r.unusable, ["bad"]);
        assert!(valid_id(&r.inbound_id), "{}", r.inbound_id);
        assert_eq!(ex.store.writes(), 2);
    }

    #[tokio::test]
    async fn injected_mail_lands_at_the_providers_of_its_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), false);
        let raw = b"From: someone@ordinaria.test\nTo: anna@pec.altro.test\n\nciao\n";
        let to = vec![
            "anna@pec.altro.test".to_string(),
            "me@pec.example.test".into(),
        ];
        let d = ex
            .inject("someone@ordinaria.test", &to, raw, None, t(5))
            .await
            .unwrap();
        assert_eq!(d.len(), 2);
        let keys = ex.store.keys("raw-b");
        assert_eq!(keys.len(), 2);
        assert!(keys[0].starts_with("inbound/20261123T041205000Z-inject-"));
        let eml = ex.store.object("raw-b", &keys[0]).unwrap();
        assert!(eml.starts_with(b"Return-Path: <someone@ordinaria.test>\nReceived: "));
        assert!(eml.ends_with(raw));
        let env: InboundEnvelope =
            serde_json::from_slice(&ex.store.object("raw-a", &keys[1]).unwrap()).unwrap();
        assert_eq!(env.recipients, ["me@pec.example.test"]);

        // Explicit id: idempotent.
        ex.inject("a@ordinaria.test", &to[..1], raw, Some("fixture-1"), t(6))
            .await
            .unwrap();
        let again = ex
            .inject("a@ordinaria.test", &to[..1], raw, Some("fixture-1"), t(7))
            .await
            .unwrap();
        assert_eq!(again[0].note.as_deref(), Some("already there"));

        for (from, to, id) in [
            ("someone@ordinaria.test", vec!["x@ordinaria.test"], None),
            ("someone@ordinaria.test", vec![], None),
            ("nobody", vec!["anna@pec.altro.test"], None),
            (
                "a@ordinaria.test",
                vec!["anna@pec.altro.test"],
                Some("../x"),
            ),
            ("a@ordinaria.test", vec!["junk"], None),
        ] {
            let to: Vec<String> = to.into_iter().map(str::to_string).collect();
            assert!(
                ex.inject(from, &to, raw, id, t(8)).await.is_err(),
                "{from} {to:?}"
            );
        }
        assert_eq!(ex.store.writes(), 6);
    }

    #[test]
    fn names() {
        assert_eq!(safe_name("abc-DEF-123"), "abc-DEF-123");
        let file_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 97
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        let odd = safe_name("a/b.c");
        assert!(odd.starts_with("a-b-c-") && file_name(&odd), "{odd}");
        assert_ne!(safe_name("a/b"), safe_name("a.b"));
        assert!(file_name(&safe_name(&"x".repeat(500))));
        assert!(file_name(&safe_name("")));
        assert!(file_name(&safe_name("../../etc/passwd")));
        assert_eq!(time_id(t(38), "s"), "20261123T041238000Z-s");
        let ses = "keaondozldqeikay-umimqgai-oexp-ktux-tpkp-rcufpocmmkdg-qmqlpr";
        let id = time_id(t(38), ses);
        assert!(valid_id(&id) && id.len() <= 64, "{id}");
        assert!(id.starts_with("20261123T041238000Z-keaondozldqeikay-umimqgai-oexp-"));
        assert_ne!(id, time_id(t(38), &format!("{ses}x")));
        for odd in ["", "../..", "a b", &"é".repeat(50)] {
            assert!(valid_id(&time_id(t(38), odd)), "{odd:?}");
        }
        assert!(!valid_id(&"a".repeat(65)));
    }

    /// A provider's signature survives what SES does to the top-level headers (on both ends).
    #[tokio::test]
    async fn a_signed_message_still_verifies_after_the_exchange() {
        use pec_smime::{
            DevCa, LocalSigner, ProviderCertificateParams, SigningIdentity, TrustAnchors, Verdict,
            VerifyOptions, sign_message, verify_message,
        };
        let y = |y| Utc.with_ymd_and_hms(y, 1, 1, 0, 0, 0).unwrap();
        let ca = DevCa::generate("Exchange test CA", y(2025), y(2035))
            .await
            .unwrap();
        let key = LocalSigner::generate_rsa(2048).unwrap();
        let cert = ca
            .issue_provider_certificate(
                &ProviderCertificateParams::new(
                    "Example Gestore PEC S.p.A.",
                    "pec.example.test",
                    y(2025),
                    y(2030),
                ),
                key.public_key_spki_der(),
            )
            .await
            .unwrap();
        let identity = SigningIdentity::new(cert, vec![]).unwrap();
        let headers: Vec<(String, String)> = [
            ("Date", "Mon, 23 Nov 2026 10:00:00 +0100"),
            ("From", "posta-certificata@pec.example.test"),
            ("To", "anna@pec.altro.test"),
            ("Subject", "POSTA CERTIFICATA: prova"),
            ("Message-ID", "<opec-signed@pec.example.test>"),
        ]
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
        let entity = b"Content-Type: text/plain; charset=utf-8\r\n\r\nIl messaggio originale.\r\n";
        let signed = sign_message(&key, &identity, &headers, entity, t(0))
            .await
            .unwrap();
        let mut anchors = TrustAnchors::new();
        anchors
            .add_pem_bundle(ca.certificate_pem().unwrap().as_bytes())
            .unwrap();
        let check = |raw: &[u8]| verify_message(raw, &anchors, None, &VerifyOptions::default());
        assert_eq!(check(&signed).verdict, Verdict::Valid);

        let dir = tempfile::tempdir().unwrap();
        let ex = exchange(dir.path(), true);
        let m = SentMail {
            raw: signed.clone(),
            ..mail("signed-1", Some(vec!["anna@pec.altro.test"]))
        };
        let Outcome::Delivered(r) = ex.deliver(&m, t(40)).await.unwrap() else {
            panic!()
        };
        let arrived = ex
            .store
            .object("raw-b", &format!("inbound/{}.eml", r.inbound_id))
            .unwrap();
        assert_ne!(arrived, signed);
        assert!(String::from_utf8_lossy(&arrived).contains("signed-1@eu-south-1.amazonses.com"));
        assert_eq!(
            check(&arrived).verdict,
            Verdict::Valid,
            "{:?}",
            check(&arrived)
        );
    }
}
