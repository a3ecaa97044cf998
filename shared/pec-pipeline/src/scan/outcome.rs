//! The PEC virus outcome of each point, built with pec-core's builders (pure: no IO, the time
//! and the ids are given, so a retry rebuilds the very same bytes).

use chrono::{DateTime, Utc};
use pec_core::UnsignedMessage;
use pec_core::build::{self, BuildError, Ctx, NonAcceptance, Provider};
use pec_core::checks::{Submission, certified_for_refusal};
use pec_core::daticert::TipoDestinatario;
use pec_core::ids::IdSource;
use pec_core::original::Certified;
use sha2::{Digest, Sha256};

use pec_ports::contract::{Point, ScanRequest};

/// The notices to sign and send, by name (`non-accettazione-virus`, `rilevazione-virus`,
/// `mancata-consegna-virus-<n>`), and a note when no notice can be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirusOutcome {
    /// (name, message) in emission order.
    pub notices: Vec<(String, UnsignedMessage)>,
    /// Why there is no notice, if there is none.
    pub note: Option<String>,
}

/// A notice could not be built.
#[derive(Debug, thiserror::Error)]
#[error("building the {notice} notice for {key}: {source}")]
pub struct OutcomeError {
    /// Which notice.
    pub notice: String,
    /// The raw message's key.
    pub key: String,
    /// The builder's error.
    pub source: BuildError,
}

/// Deterministic ids for one notice: `av<16 hex of SHA-256(raw key)><tag><n>`. Unique per
/// provider because raw keys are unique and each notice of a message has its own tag.
struct NoticeIds {
    prefix: String,
    next: u32,
}

impl NoticeIds {
    fn new(raw_key: &str, tag: &str) -> Self {
        let digest = Sha256::digest(raw_key.as_bytes());
        let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        Self {
            prefix: format!("av{hex}-{tag}-"),
            next: 1,
        }
    }
}

impl IdSource for NoticeIds {
    fn next_token(&mut self) -> String {
        let token = format!("{}{}", self.prefix, self.next);
        self.next += 1;
        token
    }
}

/// The virus outcome for `request` about `raw`, with `description` as what was found.
pub fn virus_outcome(
    request: &ScanRequest,
    raw: &[u8],
    description: &str,
    provider: &Provider,
    at: DateTime<Utc>,
) -> Result<VirusOutcome, OutcomeError> {
    let fail = |notice: &str| {
        let key = request.key.clone();
        let notice = notice.to_string();
        move |source| OutcomeError {
            notice,
            key,
            source,
        }
    };
    match &request.point {
        Point::Access {
            identificativo,
            user,
            reverse_path,
            recipients,
            certified_recipients,
        } => {
            let submission = Submission {
                raw,
                reverse_path,
                recipients,
                owned_addresses: &[],
            };
            let tipo_of = |a: &str| {
                if certified_recipients
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(a))
                {
                    TipoDestinatario::Certificato
                } else {
                    TipoDestinatario::Esterno
                }
            };
            let certified = certified_for_refusal(&submission, identificativo, &tipo_of);
            let name = pec_ports::keys::VIRUS_NON_ACCEPTANCE;
            let mut ids = NoticeIds::new(&request.key, "na");
            let mut ctx = Ctx {
                provider,
                now: at,
                ids: &mut ids,
            };
            let notice = build::non_accettazione(
                &mut ctx,
                &certified,
                &NonAcceptance::Virus(description.to_string()),
                user,
            )
            .map_err(fail(name))?;
            Ok(VirusOutcome {
                notices: vec![(name.to_string(), notice)],
                note: None,
            })
        }
        Point::Receiving {
            recipients,
            sender_receipt_address,
        } => {
            let classification = pec_core::classify::classify(raw);
            let Some(daticert) = classification.daticert.as_ref() else {
                return Ok(VirusOutcome {
                    notices: Vec::new(),
                    note: Some(format!(
                        "not a PEC transport envelope ({}): quarantined and not delivered; no PEC notice to send",
                        classification.description()
                    )),
                });
            };
            let certified = Certified::from_daticert(daticert);
            let mut notices = Vec::new();
            let name = pec_ports::keys::VIRUS_DETECTED;
            let mut ids = NoticeIds::new(&request.key, "rv");
            let mut ctx = Ctx {
                provider,
                now: at,
                ids: &mut ids,
            };
            notices.push((
                name.to_string(),
                build::rilevazione_virus(
                    &mut ctx,
                    &certified,
                    recipients,
                    description,
                    sender_receipt_address,
                )
                .map_err(fail(name))?,
            ));
            for (n, recipient) in recipients.iter().enumerate() {
                let name = format!("{}-{}", pec_ports::keys::VIRUS_NOT_DELIVERED, n + 1);
                let mut ids = NoticeIds::new(&request.key, &format!("mc{}", n + 1));
                let mut ctx = Ctx {
                    provider,
                    now: at,
                    ids: &mut ids,
                };
                let notice =
                    build::mancata_consegna_virus(&mut ctx, &certified, recipient, description)
                        .map_err(fail(&name))?;
                notices.push((name, notice));
            }
            Ok(VirusOutcome {
                notices,
                note: None,
            })
        }
    }
}
