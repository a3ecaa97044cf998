//! The monthly password-protection report (issue #18 item 6): early on the first of each month
//! the scheduled `password-report` function sends every mailbox that had a breached password
//! refused in the month just ended ([`pec_ports::breach::PasswordFinding`]) **a PEC message
//! from the provider**: what was found (when, where the password was being set, how often it
//! had been seen, by band) and the remediation steps. Only findings recorded for the
//! mailbox's own tenant are reported (another tenant's refused attempt at an address it cannot
//! have says nothing about this mailbox).
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
//! concurrent run (EventBridge delivers at least once; the schedule fires on the 1st, 2nd and
//! 3rd so that a failed run is made good) submits one report.
//!
//! **The period** is a calendar month in Italian civil time (the dates the report shows), so
//! consecutive reports neither miss nor repeat a refusal. A scheduled run reports the month
//! before its event's `time` (the schedule's, stable across retries); a manual one
//! `{"month": "YYYY-MM"}`, a month that has ended. A **preview** (`{"preview": true}`) reports
//! the current month so far under its own id (`pwp-<YYYYMMDD>-…`, one a day), so it never
//! takes the month's report's place.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use chrono_tz::Europe::Rome;
use pec_core::breach::{Finding, Period, report_subject, report_text};
use pec_core::plan::Plan;
use pec_core::submission::{ENVELOPE_VERSION, SubmissionEnvelope};
use pec_ports::{Billing, Mailbox, MailboxStatus, ObjectStore, PutOutcome, StateStore, Tenant};
use serde::Serialize;

use crate::StepError;

/// The tenant of the provider's own service mailboxes.
pub const SERVICE_TENANT: &str = pec_ports::SERVICE_TENANT;
/// The local part of the service mailbox that sends the reports.
pub const SENDER_LOCAL_PART: &str = "security";
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
    /// `submitted`, `already` (this report exists), `gone` (no mailbox any more), `closed`
    /// (revoked: it receives nothing) or `other-tenant` (its findings were another tenant's
    /// attempts at the address: nothing to report).
    pub outcome: &'static str,
    pub findings: usize,
    /// The submission id.
    pub id: String,
}

/// Which report a run sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRun {
    /// The month `YYYY-MM` (Italian civil time), which must have ended.
    Month(String),
    /// The current month up to the run's time, under an id of its own (one a day).
    Preview,
}

/// The first instant (UTC) of month `month` (1-12) of `year` in Italian civil time.
fn rome_month_start(year: i32, month: u32) -> Option<DateTime<Utc>> {
    // Midnight is never in a DST gap in Rome (the changes are at 02:00 and 03:00).
    Rome.with_ymd_and_hms(year, month, 1, 0, 0, 0)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

/// The bounds of month `YYYY-MM` in Italian civil time: its first instant and the next
/// month's.
pub fn month_bounds(month: &str) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let (y, m) = month.split_once('-')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    let start = rome_month_start(y, m)?;
    let end = if m == 12 {
        rome_month_start(y + 1, 1)?
    } else {
        rome_month_start(y, m + 1)?
    };
    Some((start, end))
}

/// The month (`YYYY-MM`, Italian civil time) before the one `at` falls in: what a run at
/// `at` reports.
pub fn month_before(at: DateTime<Utc>) -> String {
    let r = at.with_timezone(&Rome);
    let (y, m) = if r.month() == 1 {
        (r.year() - 1, 12)
    } else {
        (r.year(), r.month() - 1)
    };
    format!("{y:04}-{m:02}")
}

/// The submission id of `mailbox`'s report: `pwr-<YYYYMM>-…` for a month, `pwp-<YYYYMMDD>-…`
/// for a preview made on that (Italian) day.
pub fn report_id(run: &ReportRun, mailbox: &str, now: DateTime<Utc>) -> String {
    let hash = crate::ingress::sha256_hex(pec_ports::state::norm(mailbox).as_bytes());
    match run {
        ReportRun::Month(month) => format!("pwr-{}-{}", month.replace('-', ""), &hash[..24]),
        ReportRun::Preview => format!(
            "pwp-{}-{}",
            now.with_timezone(&Rome).format("%Y%m%d"),
            &hash[..24]
        ),
    }
}

impl<Db: StateStore, St: ObjectStore> PasswordReport<Db, St> {
    /// The reports of `run`, sent at `now`.
    pub async fn run(
        &self,
        run: &ReportRun,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReportLine>, StepError> {
        let bad = |reason: String| StepError::BadRequest {
            message_id: "password-report".into(),
            reason,
        };
        let (from, to, period) = match run {
            ReportRun::Month(month) => {
                let (start, end) = month_bounds(month)
                    .ok_or_else(|| bad(format!("{month:?} is not a month (YYYY-MM)")))?;
                if end > now {
                    return Err(bad(format!(
                        "{month} has not ended: its report is sent when it has (a preview reports the current month so far)"
                    )));
                }
                (start, end, Period::Month(start))
            }
            ReportRun::Preview => {
                let r = now.with_timezone(&Rome);
                let start = rome_month_start(r.year(), r.month())
                    .ok_or_else(|| bad(format!("no month start for {now}")))?;
                (
                    start,
                    now,
                    Period::Preview {
                        from: start,
                        to: now,
                    },
                )
            }
        };
        let findings = self.state.password_findings(from, to).await?;
        let mut lines = Vec::new();
        if findings.is_empty() {
            return Ok(lines);
        }
        let mut sender = None;
        for group in findings.chunk_by(|a, b| a.mailbox == b.mailbox) {
            let mailbox = &group[0].mailbox;
            let mut line = ReportLine {
                mailbox: mailbox.clone(),
                outcome: "submitted",
                findings: 0,
                id: report_id(run, mailbox, now),
            };
            match self.state.mailbox(mailbox).await? {
                None => line.outcome = "gone",
                Some(m) if m.status == MailboxStatus::Revoked => line.outcome = "closed",
                Some(m) => {
                    // Only what was refused for this mailbox's own tenant.
                    let list: Vec<Finding> = group
                        .iter()
                        .filter(|f| f.tenant == m.tenant)
                        .map(|f| Finding {
                            at: f.at,
                            setting: f.setting,
                            band: f.band,
                        })
                        .collect();
                    line.findings = list.len();
                    if list.is_empty() {
                        line.outcome = "other-tenant";
                    } else {
                        let from_address = match &sender {
                            Some(a) => a,
                            None => sender.insert(self.service_mailbox(now).await?),
                        };
                        if !self
                            .submit(from_address, &m, &line.id, period, &list, now)
                            .await?
                        {
                            line.outcome = "already";
                        }
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
    async fn submit(
        &self,
        sender: &str,
        to: &Mailbox,
        id: &str,
        period: Period,
        findings: &[Finding],
        now: DateTime<Utc>,
    ) -> Result<bool, StepError> {
        if self.state.message(id).await?.is_some() {
            return Ok(false);
        }
        let s = &self.settings;
        let envelope = SubmissionEnvelope {
            receipts_folder: None,
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
        let text = report_text(&to.address, &s.provider_name, period, findings);
        let message = mail_builder::MessageBuilder::new()
            .from((
                format!("{} - Sicurezza", s.provider_name),
                sender.to_string(),
            ))
            .to(to.address.as_str())
            .subject(report_subject(&to.address, period))
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
            ("altrui@pec.example.it", MailboxStatus::Active),
        ] {
            state.create_mailbox(&member(a, st)).await.unwrap();
        }
        // November 2026 in Rome: (2026-10-31T23:00Z, 2026-11-30T23:00Z].
        for (mailbox, tenant, time) in [
            ("uno@pec.example.it", "t1", "2026-11-03T10:00:00Z"),
            ("uno@pec.example.it", "t1", "2026-11-20T10:00:00Z"),
            ("due@pec.example.it", "t1", "2026-11-30T23:00:00Z"), // the month's last instant: in
            ("due@pec.example.it", "t1", "2026-10-31T23:00:00Z"), // October's last: out
            ("chiusa@pec.example.it", "t1", "2026-11-10T10:00:00Z"),
            ("via@pec.example.it", "t1", "2026-11-10T10:00:00Z"),
            ("altrui@pec.example.it", "t2", "2026-11-10T10:00:00Z"), // another tenant's attempt
            ("uno@pec.example.it", "t1", "2026-11-30T23:00:01Z"),    // December's
        ] {
            state
                .record_password_finding(&PasswordFinding {
                    mailbox: mailbox.into(),
                    tenant: tenant.into(),
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
    async fn one_report_per_mailbox_with_findings_in_the_month_and_once() {
        let r = world().await;
        let now = at("2026-12-01T05:00:00Z");
        assert_eq!(month_before(now), "2026-11");
        let run = ReportRun::Month("2026-11".into());
        let lines = r.run(&run, now).await.unwrap();
        let got: Vec<(&str, &str, usize)> = lines
            .iter()
            .map(|l| (l.mailbox.as_str(), l.outcome, l.findings))
            .collect();
        assert_eq!(
            got,
            vec![
                ("altrui@pec.example.it", "other-tenant", 0),
                ("chiusa@pec.example.it", "closed", 0),
                ("due@pec.example.it", "submitted", 1),
                ("uno@pec.example.it", "submitted", 2),
                ("via@pec.example.it", "gone", 0),
            ]
        );
        let uno = &lines[3];
        assert!(
            uno.id.starts_with("pwr-202611-") && uno.id.len() == 35,
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
            Some("Protezione password: rapporto di novembre 2026 per uno@pec.example.it")
        );
        let body = parsed.body_text(0).unwrap();
        assert!(body.contains("Periodo: novembre 2026."), "{body}");
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
        let again = r.run(&run, now + chrono::Duration::days(1)).await.unwrap();
        assert!(again.iter().all(|l| l.outcome != "submitted"), "{again:?}");
        assert_eq!(r.store.writes(), writes, "no object written again");
    }

    #[tokio::test]
    async fn a_preview_never_takes_the_months_report() {
        let r = world().await;
        // 2 December: the preview reports December so far, under its own id.
        let now = at("2026-12-02T09:00:00Z");
        let lines = r.run(&ReportRun::Preview, now).await.unwrap();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].mailbox, "uno@pec.example.it");
        assert!(lines[0].id.starts_with("pwp-20261202-"), "{}", lines[0].id);
        // December has not ended: its report cannot be sent yet.
        assert!(
            r.run(&ReportRun::Month("2026-12".into()), now)
                .await
                .is_err()
        );
        // November's still goes out.
        let nov = r
            .run(&ReportRun::Month("2026-11".into()), now)
            .await
            .unwrap();
        assert!(
            nov.iter()
                .any(|l| l.mailbox == "uno@pec.example.it" && l.outcome == "submitted")
        );
    }

    #[tokio::test]
    async fn no_findings_no_report_and_no_service_mailbox() {
        let r = world().await;
        let lines = r
            .run(
                &ReportRun::Month("2026-05".into()),
                at("2026-06-01T05:00:00Z"),
            )
            .await
            .unwrap();
        assert!(lines.is_empty());
        assert!(
            r.state
                .mailbox("security@pec.example.it")
                .await
                .unwrap()
                .is_none()
        );
        assert!(month_bounds("2026-13").is_none() && month_bounds("26-01").is_none());
        assert_eq!(
            month_bounds("2026-12"),
            Some((at("2026-11-30T23:00:00Z"), at("2026-12-31T23:00:00Z")))
        );
        assert_eq!(month_before(at("2027-01-01T04:00:00Z")), "2026-12");
        assert!(
            r.run(
                &ReportRun::Month("giugno".into()),
                at("2026-06-01T05:00:00Z")
            )
            .await
            .is_err()
        );
    }
}
