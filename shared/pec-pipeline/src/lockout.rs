//! The spam lockout (issue #18; the service sheet): every outbound message is scored for spam
//! and still goes through the PEC engine; each detection is logged (ingress, from the scan's
//! hand-off); this sweep, run on a schedule, **locks** every mailbox that sent more than
//! `threshold` spam messages in a rolling `window` ([`pec_core::lockout::LockoutRule`]), and
//! sends a one-time reset link to its member's contact address (and by SMS to the contact
//! mobile, when the member has one). The aim is to stop spam sent
//! with credentials stolen by phishing or malware.
//!
//! Locking replaces the password hash with [`NOT_ACTIVATED`] (no password matches it) and sets
//! `locked` with a [`LockNote`], in one conditional write: SMTP, IMAP, POP3 and the API refuse
//! the mailbox from then on (the API's sessions check the mailbox on every request). The reset
//! link is an activation link with `reset` set: `POST /v1/activation` with it chooses a new
//! password and lifts the lock in one conditional write.
//!
//! **Exactly once.** Two sweeps at once, or one run twice, lock once (the conditional write)
//! and send one link: whoever locks, or finds the mailbox locked, first *claims* the link with
//! `mark_sent("spamlock/<address>/<since>", contact)` (a conditional put) and only the claimant
//! sends. A sweep that died between the lock and the claim is finished by the next sweep.
//! Detections from before the last unlock never lock again.

use chrono::{DateTime, Duration, Utc};
use pec_core::events::PecEvent;
use pec_core::lockout::LockoutRule;
use pec_ports::activation::{NOT_ACTIVATED, token_hash};
use pec_ports::sms::SmsSender;
use pec_ports::{
    ActivationRecord, LockNote, MailTransport, Mailbox, MemberRecord, StateError, StateStore,
};
use serde::Serialize;

/// How the sweep runs (template parameters `SpamLockThreshold`, `SpamLockWindowMinutes`; the
/// schedule every `sweep_every`).
#[derive(Debug, Clone)]
pub struct LockoutSettings {
    pub rule: LockoutRule,
    /// The interval of the schedule: the sweep reads `window + sweep_every` back.
    pub sweep_every: Duration,
    /// How long a reset link works.
    pub reset_valid: Duration,
    /// The page that opens the link (`PEC_ACTIVATION_URL`; the token follows `#`).
    pub reset_url: String,
    /// The reset mail comes from `noreply@<provider domain>`.
    pub provider_domain: String,
    /// The issuer of the provider-log records of locks.
    pub provider_name: String,
}

impl LockoutSettings {
    /// From the function's environment: `PEC_SPAM_LOCK_THRESHOLD` (default 10),
    /// `PEC_SPAM_LOCK_WINDOW_MINUTES` (60), `PEC_SPAM_SWEEP_MINUTES` (5: the schedule's rate),
    /// `PEC_RESET_LINK_HOURS` (24), `PEC_ACTIVATION_URL` (the page of activation and reset
    /// links; unset: mailboxes are locked but no link can be sent), `PEC_PROVIDER_DOMAIN`,
    /// `PEC_PROVIDER_NAME` (default: the domain).
    pub fn from_env(env: &pec_ports::Env<'_>) -> Result<Self, pec_ports::ConfigError> {
        let positive = |name: &str, default: u32| -> Result<u32, pec_ports::ConfigError> {
            match env.parse::<u32>(name)? {
                Some(0) => Err(pec_ports::ConfigError::Malformed {
                    name: name.into(),
                    value: "0".into(),
                    reason: "must be at least 1".into(),
                }),
                Some(v) => Ok(v),
                None => Ok(default),
            }
        };
        Ok(Self {
            rule: LockoutRule {
                threshold: positive("PEC_SPAM_LOCK_THRESHOLD", 10)? as usize,
                window: Duration::minutes(positive("PEC_SPAM_LOCK_WINDOW_MINUTES", 60)?.into()),
            },
            sweep_every: Duration::minutes(positive("PEC_SPAM_SWEEP_MINUTES", 5)?.into()),
            reset_valid: Duration::hours(positive("PEC_RESET_LINK_HOURS", 24)?.into()),
            reset_url: env.or("PEC_ACTIVATION_URL", ""),
            provider_name: env.or("PEC_PROVIDER_NAME", &env.required("PEC_PROVIDER_DOMAIN")?),
            provider_domain: env.required("PEC_PROVIDER_DOMAIN")?,
        })
    }
}

/// Why a lock, an unlock or a link did not happen.
#[derive(Debug, thiserror::Error)]
pub enum LockoutError {
    #[error("no mailbox {0}")]
    NoMailbox(String),
    #[error("the mailbox {0} kept changing; try again")]
    Contended(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The scheduled `spam-sweep` function: [`sweep`] over the state and the mail transport.
pub struct SpamSweep<Db, Mt, Sm> {
    pub state: Db,
    pub mail: Mt,
    /// The reset link by SMS too, to members with a contact mobile.
    pub sms: Sm,
    pub settings: LockoutSettings,
    /// A new reset link's secret (the host's random source).
    pub new_token: fn() -> String,
}

impl<Db: StateStore, Mt: MailTransport, Sm: SmsSender> SpamSweep<Db, Mt, Sm> {
    /// One run at `now`.
    pub async fn run(&self, now: DateTime<Utc>) -> Result<Vec<SweepLine>, LockoutError> {
        let mut tokens = self.new_token;
        sweep(
            &self.state,
            &self.mail,
            &self.sms,
            &self.settings,
            now,
            &mut tokens,
        )
        .await
    }
}

/// The destination of the reset-link claim (`SENT#spamlock/<address>/<lock time>`): one link
/// per lock, whatever the contact address is by then.
const RESET_LINK: &str = "reset-link";

/// What [`lock`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// Locked by this call.
    Now(Mailbox),
    /// It was locked already (nothing changed).
    Already(Mailbox),
}

/// Locks `address` with `note` (sweep or operator), replacing its password hash, in one
/// conditional write. A locked mailbox is left as it is, except that the operator's lock takes
/// over a spam lock: its note replaces the spam lock's, so the reset link sent for that lock no
/// longer lifts it.
pub async fn lock<Db: StateStore>(
    state: &Db,
    address: &str,
    note: LockNote,
) -> Result<Locked, LockoutError> {
    for _ in 0..5 {
        let current = state
            .mailbox(address)
            .await?
            .ok_or_else(|| LockoutError::NoMailbox(address.to_string()))?;
        if current.locked && !(note.by_operator && current.spam_lock().is_some()) {
            return Ok(Locked::Already(current));
        }
        let new = Mailbox {
            locked: true,
            password_hash: NOT_ACTIVATED.to_string(),
            lock: Some(note.clone()),
            ..current.clone()
        };
        if state.replace_mailbox(&current, &new, None).await? {
            return Ok(Locked::Now(new));
        }
    }
    Err(LockoutError::Contended(address.to_string()))
}

/// Records a lock in the provider log (DPR 68/2005 art. 11 asks for the provider's events; a
/// lock is one a court may ask about): `pec.mailbox.locked`, at the lock's time, with its
/// reason and what caused it. Idempotent (the record's id comes from the mailbox and the
/// lock): the sweep records every spam lock it sees, so one that died between the lock and
/// the record is completed by the next.
pub async fn record_lock<Db: StateStore>(
    state: &Db,
    address: &str,
    note: &LockNote,
    issuer: &str,
) -> Result<bool, StateError> {
    let detail = if note.by_operator {
        "locked by the operator".to_string()
    } else {
        format!(
            "{} outbound messages scored as spam in the rolling window: password replaced",
            note.detections
        )
    };
    let event = PecEvent::mailbox_lock(
        true,
        address,
        note.since,
        note.since,
        &note.reason,
        Some(detail),
        issuer,
    );
    state.append_log(&event).await
}

/// Records the operator's unlock of the lock placed at `note.since` (`pec.mailbox.unlocked`).
pub async fn record_unlock<Db: StateStore>(
    state: &Db,
    address: &str,
    note: &LockNote,
    at: DateTime<Utc>,
    issuer: &str,
) -> Result<bool, StateError> {
    let event = PecEvent::mailbox_lock(
        false,
        address,
        note.since,
        at,
        &note.reason,
        Some("unlocked by the operator".into()),
        issuer,
    );
    state.append_log(&event).await
}

/// Lifts a lock (the operator's `pec mailbox unlock`): `false` if it was not locked. The
/// password is not given back: after a spam lock the member chooses a new one with the reset
/// link (or a new one the tenant sends).
pub async fn unlock<Db: StateStore>(
    state: &Db,
    address: &str,
    now: DateTime<Utc>,
) -> Result<bool, LockoutError> {
    for _ in 0..5 {
        let current = state
            .mailbox(address)
            .await?
            .ok_or_else(|| LockoutError::NoMailbox(address.to_string()))?;
        if !current.locked {
            return Ok(false);
        }
        let new = Mailbox {
            locked: false,
            lock: current.lock.clone().map(|note| LockNote {
                unlocked_at: Some(now),
                ..note
            }),
            ..current.clone()
        };
        if state.replace_mailbox(&current, &new, None).await? {
            return Ok(true);
        }
    }
    Err(LockoutError::Contended(address.to_string()))
}

/// One mailbox the sweep looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepLine {
    pub mailbox: String,
    /// Detections counted (since the lookback or the last unlock).
    pub detections: usize,
    /// `locked`, `already-locked`, `under-threshold`, `no-mailbox`.
    pub outcome: &'static str,
    /// For a spam-locked mailbox: `sent to <contact>` (and `; by SMS to <mobile>` for a member
    /// with a contact mobile), `already sent`, `no contact address`, `failed: ...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// The sweep at `now`: every mailbox with a detection in the lookback is checked against the
/// rule; `new_token` gives each reset link's secret (randomness stays out of the pipeline).
pub async fn sweep<Db: StateStore, Mt: MailTransport, Sm: SmsSender>(
    state: &Db,
    mail: &Mt,
    sms: &Sm,
    settings: &LockoutSettings,
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
) -> Result<Vec<SweepLine>, LockoutError> {
    // Twice the window back: a failed or late sweep, or lag between the submission and its
    // logged detection, still sees a burst whole (detections are kept two days).
    let since = now - settings.rule.lookback(settings.sweep_every) - settings.rule.window;
    let mut lines = Vec::new();
    for address in state.spam_senders(since, now).await? {
        // One mailbox's failure is reported on its line; the others are still swept.
        let line = match sweep_one(state, mail, sms, settings, &address, since, now, new_token)
            .await
        {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(mailbox = %address, error = %e, "spam sweep failed for this mailbox; the next sweep retries");
                SweepLine {
                    mailbox: address,
                    detections: 0,
                    outcome: "error",
                    link: Some(e.to_string()),
                }
            }
        };
        lines.push(line);
    }
    Ok(lines)
}

/// One mailbox of the sweep.
#[allow(clippy::too_many_arguments)]
async fn sweep_one<Db: StateStore, Mt: MailTransport, Sm: SmsSender>(
    state: &Db,
    mail: &Mt,
    sms: &Sm,
    settings: &LockoutSettings,
    address: &str,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
) -> Result<SweepLine, LockoutError> {
    let mut line = SweepLine {
        mailbox: address.to_string(),
        detections: 0,
        outcome: "under-threshold",
        link: None,
    };
    let Some(mailbox) = state.mailbox(address).await? else {
        line.outcome = "no-mailbox";
        return Ok(line);
    };
    if mailbox.status == pec_ports::MailboxStatus::Revoked {
        line.outcome = "revoked";
        return Ok(line);
    }
    // The provider's own senders (the monthly password reports) are scored like any
    // submission but never locked: locking them would stop the reports.
    if mailbox.tenant == pec_ports::SERVICE_TENANT {
        line.outcome = "provider-service";
        return Ok(line);
    }
    let locked = if mailbox.locked {
        line.outcome = "already-locked";
        Some(mailbox)
    } else {
        // Detections before the last unlock were paid for: they never lock again.
        let from = match mailbox.lock.as_ref().and_then(|l| l.unlocked_at) {
            Some(unlocked) if unlocked > since => unlocked,
            _ => since,
        };
        let times: Vec<DateTime<Utc>> = state
            .spam_detections(address, from)
            .await?
            .iter()
            .map(|d| d.at)
            .collect();
        line.detections = times.len();
        if let Some(burst) = settings.rule.burst(&times) {
            let note = LockNote {
                reason: "spam".into(),
                since: now,
                by_operator: false,
                detections: burst.count,
                unlocked_at: None,
            };
            match lock(state, address, note).await? {
                Locked::Now(m) => {
                    line.outcome = "locked";
                    tracing::warn!(mailbox = %address, detections = burst.count, first = %burst.first, last = %burst.last, "mailbox locked by the spam lockout");
                    Some(m)
                }
                Locked::Already(m) => {
                    line.outcome = "already-locked";
                    Some(m)
                }
            }
        } else {
            None
        }
    };
    if let Some(m) = locked.filter(|m| m.spam_lock().is_some()) {
        if let Some(note) = m.spam_lock() {
            record_lock(state, &m.address, note, &settings.provider_name).await?;
        }
        line.link = Some(send_reset(state, mail, sms, settings, &m, now, new_token).await?);
    }
    Ok(line)
}

/// Sends the reset link of a spam-locked mailbox at most once per lock: the link is stored, then
/// claimed with `mark_sent` (only the claimant sends), then sent. What happened, in words.
async fn send_reset<Db: StateStore, Mt: MailTransport, Sm: SmsSender>(
    state: &Db,
    mail: &Mt,
    sms: &Sm,
    settings: &LockoutSettings,
    mailbox: &Mailbox,
    now: DateTime<Utc>,
    new_token: &mut (dyn FnMut() -> String + Send),
) -> Result<String, LockoutError> {
    let Some(note) = mailbox.spam_lock() else {
        return Ok("not spam-locked".into());
    };
    let member = match &mailbox.member {
        Some(cf) => state.member(&mailbox.tenant, cf).await?,
        None => None,
    };
    if settings.reset_url.is_empty() {
        tracing::error!(mailbox = %mailbox.address, "no reset page configured (PEC_ACTIVATION_URL): no reset link can be sent");
        return Ok("no reset page configured (ActivationUrl)".into());
    }
    let Some(member) = member else {
        tracing::warn!(mailbox = %mailbox.address, "spam-locked mailbox has no member contact: the tenant or the operator must reach its holder");
        return Ok("no contact address".into());
    };
    let claim = format!(
        "spamlock/{}/{}",
        mailbox.address,
        note.since.format("%Y-%m-%dT%H:%M:%S%.3fZ")
    );
    if state.was_sent(&claim, RESET_LINK).await? {
        return Ok("already sent".into());
    }
    // Stored before the claim: a link that is claimed but never stored cannot happen; one
    // stored and not claimed (another sweep won) is never sent and expires unknown.
    let token = new_token();
    let link = ActivationRecord {
        token_hash: token_hash(&token),
        address: mailbox.address.clone(),
        tenant: mailbox.tenant.clone(),
        agreement: false,
        expires_at: now + settings.reset_valid,
        reset_for: Some(note.since),
    };
    state.put_activation(&link).await?;
    if !state.mark_sent(&claim, RESET_LINK).await? {
        return Ok("already sent".into());
    }
    let message = reset_message(
        &settings.provider_domain,
        &settings.reset_url,
        &member,
        &link,
        &token,
        now,
    );
    let sender = format!("noreply@{}", settings.provider_domain);
    let mut said = match mail
        .send_raw(&sender, std::slice::from_ref(&member.email), &message)
        .await
    {
        Ok(_) => format!("sent to {}", member.email),
        Err(e) => {
            // Claimed but not sent: the tenant resends (POST /v1/mailboxes/{address}/activation
            // sends a reset link while the mailbox is spam-locked). The unsent link is left to
            // expire: nobody has its token.
            tracing::error!(mailbox = %mailbox.address, contact = %member.email, error = %e, "the reset link could not be sent");
            format!("failed: {e}")
        }
    };
    // The same link by SMS to the contact mobile: the thief of a mail password may read the
    // contact mailbox too, rarely the phone. Under the same claim: at most once per lock.
    if let Some(mobile) = &member.mobile {
        let text = pec_core::sms::reset_link(
            &mailbox.address,
            &format!("{}#{token}", settings.reset_url),
            link.expires_at,
        );
        match sms.send(mobile, &text).await {
            Ok(_) => said.push_str(&format!("; by SMS to {mobile}")),
            Err(e) => {
                tracing::error!(mailbox = %mailbox.address, error = %e, "the reset link could not be sent by SMS");
                said.push_str(&format!("; SMS failed: {e}"));
            }
        }
    }
    Ok(said)
}

/// The reset mail (plain text, Italian) to the member's contact address: what happened, what
/// to do, the link (`url#token`) and its expiry.
pub(crate) fn reset_message(
    provider_domain: &str,
    url: &str,
    member: &MemberRecord,
    link: &ActivationRecord,
    token: &str,
    now: DateTime<Utc>,
) -> Vec<u8> {
    let (nome, cognome) = (&member.nome, &member.cognome);
    let expiry = link
        .expires_at
        .with_timezone(&chrono_tz::Europe::Rome)
        .format("%d/%m/%Y alle %H:%M");
    let body = format!(
        "Gentile {nome} {cognome},\r\n\r\nla casella PEC\r\n\r\n    {address}\r\n\r\nha inviato \
         in poco tempo molti messaggi riconosciuti come spam: succede quando la password è stata \
         rubata (phishing, un programma malevolo). Per proteggerla l'abbiamo bloccata e ne abbiamo \
         cambiato la password; nessun messaggio può essere inviato né letto finché non ne sceglie \
         una nuova.\r\n\r\nPrima di farlo controlli che il suo computer e il suo telefono siano \
         puliti. Poi apra entro il {expiry} questo collegamento e scelga una password nuova, mai \
         usata altrove:\r\n\r\n    {url}#{token}\r\n\r\nIl collegamento vale una sola volta. \
         Nessuna password le viene inviata per posta elettronica.\r\n",
        address = link.address,
    );
    let id = &link.token_hash[..24];
    mail_builder::MessageBuilder::new()
        .from((
            "Posta Elettronica Certificata".to_string(),
            format!("noreply@{provider_domain}"),
        ))
        .to(member.email.as_str())
        .subject(format!("Casella PEC {} bloccata per spam", link.address))
        .message_id(format!("reset.{id}@{provider_domain}"))
        .date(now.timestamp())
        .text_body(body)
        .write_to_vec()
        .unwrap_or_default()
}
