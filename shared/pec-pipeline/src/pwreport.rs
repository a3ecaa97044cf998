//! The monthly password-protection report (issue #18 item 6): on the first of each month the
//! scheduled `password-report` function sends every mailbox that had a breached password
//! refused in the last 30 days ([`pec_ports::breach::PasswordFinding`]) **a PEC message from
//! the provider**: what was found (when, where the password was being set, how often it had
//! been seen, by band) and the remediation steps.
//!
//! The report is a real PEC, submitted by the provider's service mailbox
//! `security@<provider domain>` (a local part no tenant may take) through the same path as any
//! submission (`submitted/<id>.eml`, then `submitted/<id>.json`): ingress accepts it, the
//! transport envelope is signed by the signing function alone, deliver files it in the INBOX,
//! and the delivery receipt comes back to the service mailbox as proof. Nothing here signs.
//! The service mailbox (tenant [`SERVICE_TENANT`], no password: nobody logs in with it) is
//! created by the first run; the spam lockout never locks it.
//!
//! **Exactly once per mailbox and month.** The submission id is derived from the month and the
//! address (`pwr-<YYYYMM>-<24 hex of SHA-256(address)>`); a run that finds the message
//! recorded does nothing, and both objects are written only if absent, so a repeated or
//! concurrent run (EventBridge delivers at least once) submits one report.
//!
//! **The window** is `(end - 30 days, end]`, `end` the first instant of the month (or the run's
//! time, for a month not begun: a preview). A scheduled run takes the month from the event's
//! `time` (the schedule's, stable across retries), a manual one from `{"month": "YYYY-MM"}`.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use pec_core::breach::{Finding, report_subject, report_text};
use pec_core::plan::Plan;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_ports::{Billing, Mailbox, MailboxStatus, ObjectStore, PutOutcome, StateStore, Tenant};
use serde::Serialize;

use crate::StepError;

/// The tenant of the provider's own service mailboxes.
pub const SERVICE_TENANT: &str = pec_ports::SERVICE_TENANT;
/// The local part of the service mailbox that sends the reports.
pub const SENDER_LOCAL_PART: &str = "security";
/// Days of findings a report covers.
pub const WINDOW_DAYS: i64 = 30;
/// The password hash of a mailbox nobody logs in to (`!`: no password matches it).
const NO_LOGIN: &str = "!provider-service";

/// What the report function reads from its environment.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// `PEC_PROVIDER_DOMAIN`: the service mailbox's domain.
    pub provider_domain: String,
    /// `PEC_PROVIDER_NAME` (default: the domain): signs the report's text.
    pub provider_name: String,
    /// `PEC_RAW_BUCKET`: where submissions go.
    pub raw_bucket: String,
}

impl ReportSettings {
    pub fn from_env(env: &pec_ports::Env<'_>) -> Result<Self, pec_ports::ConfigError> {
        let provider_domain = env.required("PEC_PROVIDER_DOMAIN")?.to_ascii_lowercase();
        Ok(ReportSettings {
            provider_name: env.or("PEC_PROVIDER_NAME", &provider_domain),
            raw_bucket: env.required("PEC_RAW_BUCKET")?,
            provider_domain,
        })
    }

    /// `security@<provider domain>`.
    pub fn sender(&self) -> String {
        format!("{SENDER_LOCAL_PART}@{}", self.provider_domain)
    }
}

/// The report function: state (findings, mailboxes, message records) and the raw bucket.
pub struct PasswordReport<Db, St> {
    pub state: Db,
    pub store: St,
    pub settings: ReportSettings,
}

/// One mailbox of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportLine {
    pub mailbox: String,
    /// `submitted`, `already` (this month's report exists), `gone` (no mailbox any more) or
    /// `closed` (revoked: it receives nothing).
    pub outcome: &'static str,
    pub findings: usize,
    /// The submission id.
    pub id: String,
}

/// `YYYY-MM` as the first instant of that month (UTC).
pub fn month_start(month: &str) -> Option<DateTime<Utc>> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    Utc.with_ymd_and_hms(y.parse().ok()?, m.parse().ok()?, 1, 0, 0, 0)
        .single()
}

/// The month (`YYYY-MM`) an instant falls in.
pub fn month_of(at: DateTime<Utc>) -> String {
    format!("{:04}-{:02}", at.year(), at.month())
}

/// The submission id of `mailbox`'s report for `month`.
pub fn report_id(month: &str, mailbox: &str) -> String {
    let hash = crate::ingress::sha256_hex(pec_ports::state::norm(mailbox).as_bytes());
    format!("pwr-{}-{}", month.replace('-', ""), &hash[..24])
}

impl<Db: StateStore, St: ObjectStore> PasswordReport<Db, St> {
    /// The reports of `month` (`YYYY-MM`), sent at `now`.
    pub async fn run(&self, month: &str, now: DateTime<Utc>) -> Result<Vec<ReportLine>, StepError> {
        let start = month_start(month).ok_or_else(|| StepError::BadRequest {
            message_id: "schedule".into(),
            reason: format!("{month:?} is not a month (YYYY-MM)"),
        })?;
        let end = start.min(now);
        let from = end - Duration::days(WINDOW_DAYS);
        let findings = self.state.password_findings(from, end).await?;
        let mut lines = Vec::new();
        if findings.is_empty() {
            return Ok(lines);
        }
        let sender = self.service_mailbox(now).await?;
        for group in findings.chunk_by(|a, b| a.mailbox == b.mailbox) {
            let mailbox = &group[0].mailbox;
            let mut line = ReportLine {
                mailbox: mailbox.clone(),
                outcome: "submitted",
                findings: group.len(),
                id: report_id(month, mailbox),
            };
            match self.state.mailbox(mailbox).await? {
                None => line.outcome = "gone",
                Some(m) if m.status == MailboxStatus::Revoked => line.outcome = "closed",
                Some(m) => {
                    let list: Vec<Finding> = group
                        .iter()
                        .map(|f| Finding {
                            at: f.at,
                            setting: f.setting,
                            band: f.band,
                        })
                        .collect();
                    if !self
                        .submit(&sender, &m, month, &line.id, from, end, &list, now)
                        .await?
                    {
                        line.outcome = "already";
                    }
                }
            }
            lines.push(line);
        }
        Ok(lines)
    }

    /// The service mailbox, created (with its tenant) the first time.
    async fn service_mailbox(&self, now: DateTime<Utc>) -> Result<String, StepError> {
        let address = self.settings.sender();
        if self.state.mailbox(&address).await?.is_some() {
            return Ok(address);
        }
        if self.state.tenant(SERVICE_TENANT).await?.is_none() {
            self.state
                .put_tenant(&Tenant {
                    id: SERVICE_TENANT.into(),
                    name: self.settings.provider_name.clone(),
                    billing: Billing::Tenant,
                })
                .await?;
        }
        let plan = Plan::GoldPlus;
        let created = self
            .state
            .create_mailbox(&Mailbox {
                address: address.clone(),
                tenant: SERVICE_TENANT.into(),
                plan,
                expansions_gb: 0,
                quota_bytes: plan.entitlements().inbox_bytes,
                used_bytes: 0,
                password_hash: NO_LOGIN.into(),
                locked: false,
                status: MailboxStatus::Active,
                member: None,
                status_note: None,
                agreement_accepted_at: None,
                refuse_ordinary: true,
                lock: None,
                ordinary_spam: Default::default(),
                sms: None,
                created_at: now,
            })
            .await?;
        if created {
            tracing::info!(mailbox = %address, "the provider's service mailbox created");
        }
        Ok(address)
    }

    /// Submits one report unless this month's is recorded or written; `false` if it was.
    #[allow(clippy::too_many_arguments)]
    async fn submit(
        &self,
        sender: &str,
        to: &Mailbox,
        month: &str,
        id: &str,
        from: DateTime<Utc>,
        end: DateTime<Utc>,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<bool, StepError> {
        if self.state.message(id).await?.is_some() {
            return Ok(false);
        }
        let s = &self.settings;
        let envelope = SubmissionEnvelope {
            version: ENVELOPE_VERSION,
            id: id.to_string(),
            received_at: now,
            user: sender.to_string(),
            tenant: SERVICE_TENANT.into(),
            reverse_path: sender.to_string(),
            recipients: vec![to.address.clone()],
            client_ip: String::new(),
            tls: true,
        };
        let text = report_text(&to.address, &s.provider_name, from, end, findings);
        let message = mail_builder::MessageBuilder::new()
            .from((
                format!("{} - Sicurezza", s.provider_name),
                sender.to_string(),
            ))
            .to(to.address.as_str())
            .subject(report_subject(&to.address, month))
            .message_id(format!("{id}@{}", s.provider_domain))
            .date(now.timestamp())
            .text_body(text)
            .write_to_vec()
            .map_err(|e| StepError::BadRequest {
                message_id: id.to_string(),
                reason: format!("the report could not be written: {e}"),
            })?;
        // The message first, announced to nobody; then the envelope that starts the access
        // point (the order of every submission path).
        self.store
            .put_if_absent(
                &s.raw_bucket,
                &envelope.message_key(),
                message,
                "message/rfc822",
            )
            .await?;
        let written = self
            .store
            .put_if_absent(
                &s.raw_bucket,
                &envelope.envelope_key(),
                envelope.to_json(),
                "application/json",
            )
            .await?;
        tracing::info!(mailbox = %to.address, id, findings = findings.len(), "password report submitted");
        Ok(written == PutOutcome::Created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pec_core::breach::{Band, Setting};
    use pec_ports::breach::PasswordFinding;
    use pec_ports::{MemoryState, MemoryStore};

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn member(address: &str, status: MailboxStatus) -> Mailbox {
        Mailbox {
            address: address.into(),
            tenant: "t1".into(),
            plan: Plan::Gold,
            expansions_gb: 0,
            quota_bytes: 1 << 30,
            used_bytes: 0,
            password_hash: "x".into(),
            locked: false,
            status,
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: at("2026-01-01T00:00:00Z"),
        }
    }

    async fn world() -> PasswordReport<MemoryState, MemoryStore> {
        let state = MemoryState::new();
        for (a, st) in [
            ("uno@pec.example.it", MailboxStatus::Active),
            ("due@pec.example.it", MailboxStatus::Active),
            ("chiusa@pec.example.it", MailboxStatus::Revoked),
        ] {
            state.create_mailbox(&member(a, st)).await.unwrap();
        }
        for (mailbox, time) in [
            ("uno@pec.example.it", "2026-11-03T10:00:00Z"),
            ("uno@pec.example.it", "2026-11-20T10:00:00Z"),
            ("due@pec.example.it", "2026-12-01T00:00:00Z"), // the window's end: in
            ("due@pec.example.it", "2026-11-01T00:00:00Z"), // the window's start: out
            ("chiusa@pec.example.it", "2026-11-10T10:00:00Z"),
            ("via@pec.example.it", "2026-11-10T10:00:00Z"),
            ("uno@pec.example.it", "2026-12-01T00:00:01Z"), // next month's
        ] {
            state
                .record_password_finding(&PasswordFinding {
                    mailbox: mailbox.into(),
                    tenant: "t1".into(),
                    at: at(time),
                    setting: Setting::Activation,
                    band: Band::Many,
                })
                .await
                .unwrap();
        }
        PasswordReport {
            state,
            store: MemoryStore::new(),
            settings: ReportSettings {
                provider_domain: "pec.example.it".into(),
                provider_name: "PEC Example".into(),
                raw_bucket: "raw".into(),
            },
        }
    }

    #[tokio::test]
    async fn one_report_per_mailbox_with_findings_in_the_window_and_once() {
        let r = world().await;
        let now = at("2026-12-01T05:00:00Z");
        let lines = r.run("2026-12", now).await.unwrap();
        let got: Vec<(&str, &str, usize)> = lines
            .iter()
            .map(|l| (l.mailbox.as_str(), l.outcome, l.findings))
            .collect();
        assert_eq!(
            got,
            vec![
                ("chiusa@pec.example.it", "closed", 1),
                ("due@pec.example.it", "submitted", 1),
                ("uno@pec.example.it", "submitted", 2),
                ("via@pec.example.it", "gone", 1),
            ]
        );
        let uno = &lines[2];
        assert!(
            uno.id.starts_with("pwr-202612-") && uno.id.len() == 35,
            "{}",
            uno.id
        );
        let env = SubmissionEnvelope::from_json(
            &r.store
                .object("raw", &format!("submitted/{}.json", uno.id))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(env.user, "security@pec.example.it");
        assert_eq!(env.tenant, SERVICE_TENANT);
        assert_eq!(env.recipients, vec!["uno@pec.example.it".to_string()]);
        let eml = r
            .store
            .object("raw", &format!("submitted/{}.eml", uno.id))
            .unwrap();
        let parsed = mail_parser::MessageParser::default().parse(&eml).unwrap();
        assert_eq!(
            parsed.subject(),
            Some("Protezione password: rapporto 2026-12 per uno@pec.example.it")
        );
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("dal 01/11/2026 al 01/12/2026"), "{body}");
        assert_eq!(
            body.matches("presente tra 10 e 999 volte").count(),
            2,
            "{body}"
        );
        // The service mailbox exists, and nobody logs in to it.
        let service = r
            .state
            .mailbox("security@pec.example.it")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(service.tenant, SERVICE_TENANT);
        assert!(service.password_hash.starts_with('!'));
        // Again (a retried schedule): nothing new.
        let writes = r.store.writes();
        let again = r.run("2026-12", now + Duration::minutes(3)).await.unwrap();
        assert!(again.iter().all(|l| l.outcome != "submitted"), "{again:?}");
        assert_eq!(r.store.writes(), writes, "no object written again");
    }

    #[tokio::test]
    async fn no_findings_no_report_and_no_service_mailbox() {
        let r = world().await;
        let lines = r.run("2026-06", at("2026-06-01T05:00:00Z")).await.unwrap();
        assert!(lines.is_empty());
        assert!(
            r.state
                .mailbox("security@pec.example.it")
                .await
                .unwrap()
                .is_none()
        );
        assert!(month_start("2026-13").is_none() && month_start("26-01").is_none());
        assert!(r.run("giugno", at("2026-06-01T05:00:00Z")).await.is_err());
    }
}
