//! Mailbox plans, their entitlements, quotas and plan changes (pure; the state table stores the
//! numbers and every feature asks [`require`] before acting).
//!
//! **The service sheet, in one table** ([`Plan::entitlements`]): nine plans — Base, Standard,
//! Pro, Plus (1 GB inbox), Bronze, Silver, Silver Plus (2 GB), Gold, Gold Plus (5 GB) — and
//! expansions of 1, 3 or 5 GB on top of the inbox. Per plan: inbox, security-archive and
//! conservation sizes, and whether it includes SMS notification, antispam, webmail, mass sending
//! (Pro and Plus with 50 free sends at activation), the e-invoice viewer, phishing protection
//! and password protection. The table rendered as Markdown is golden-tested
//! (`tests/plans/entitlements.md`): a change to the offer shows up as a diff to review.
//!
//! **1 GB here is 1 GiB (1 073 741 824 bytes)**: the larger reading, so a mailbox never holds less
//! than what was sold.
//!
//! What counts against the inbox: the stored size of every message in the mailbox (transport
//! envelopes, anomaly envelopes, receipts and notices), in bytes as stored. A transport envelope
//! that does not fit is refused with the "casella piena" non-delivery notice (NOTA 12 group 3).
//! Receipts and notices addressed to the mailbox owner are **always** stored, even beyond the
//! quota (they are the sender's legal evidence and the rules give no notice for a sender whose
//! own mailbox is full); they count, so the next envelope to a full mailbox is refused.
//!
//! **Plan changes** ([`change`]): an upgrade (nothing smaller, nothing lost) takes effect at
//! once; any other change takes effect at once only if what the mailbox holds fits the new
//! limits, and is refused otherwise with the numbers ([`PlanError::Exceeds`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// One GiB.
pub const GIB: u64 = 1024 * 1024 * 1024;

/// Largest number of expansion GB a mailbox may carry (sanity bound for stored records and
/// special contracts; what is sold is [`EXPANSION_PACKS_GB`]).
pub const MAX_EXPANSIONS_GB: u32 = 1024;

/// The expansions sold: one pack of 1, 3 or 5 GB on top of the plan's inbox.
pub const EXPANSION_PACKS_GB: [u32; 3] = [1, 3, 5];

/// Free mass sends granted when a plan that includes them is activated.
pub const FREE_MASS_SENDS_AT_ACTIVATION: u32 = 50;

/// A mailbox plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Plan {
    #[serde(rename = "base")]
    Base,
    #[serde(rename = "standard")]
    Standard,
    #[serde(rename = "pro")]
    Pro,
    #[serde(rename = "plus")]
    Plus,
    #[serde(rename = "bronze")]
    Bronze,
    #[serde(rename = "silver")]
    Silver,
    #[serde(rename = "silver-plus")]
    SilverPlus,
    #[serde(rename = "gold")]
    Gold,
    #[serde(rename = "gold-plus")]
    GoldPlus,
}

/// A feature a plan may include.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    /// A security archive (a copy of every message, kept apart from the inbox).
    SecurityArchive,
    /// Conservation a norma of messages and receipts.
    Conservation,
    /// An SMS when a message arrives.
    SmsNotification,
    /// Antispam on ordinary mail reaching the mailbox.
    Antispam,
    /// Reading and sending from the browser.
    Webmail,
    /// Sending one message to many recipients as separate envelopes, with a report.
    MassSending,
    /// Reading FatturaPA e-invoices as documents.
    EInvoiceViewer,
    /// Warnings on links and senders that imitate others.
    PhishingProtection,
    /// Passwords checked against breach data when set or changed (`pec_core::breach`), and a
    /// monthly report of what was refused.
    PasswordProtection,
}

impl Feature {
    /// Every feature, in the sheet's column order.
    pub const ALL: [Feature; 9] = [
        Feature::SecurityArchive,
        Feature::Conservation,
        Feature::SmsNotification,
        Feature::Antispam,
        Feature::Webmail,
        Feature::MassSending,
        Feature::EInvoiceViewer,
        Feature::PhishingProtection,
        Feature::PasswordProtection,
    ];

    /// The name people read (errors, the sheet).
    pub fn label(self) -> &'static str {
        match self {
            Feature::SecurityArchive => "security archive",
            Feature::Conservation => "conservation",
            Feature::SmsNotification => "SMS notification",
            Feature::Antispam => "antispam",
            Feature::Webmail => "webmail",
            Feature::MassSending => "mass sending",
            Feature::EInvoiceViewer => "e-invoice viewer",
            Feature::PhishingProtection => "phishing protection",
            Feature::PasswordProtection => "password protection",
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What one plan includes: the sheet's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entitlements {
    pub inbox_bytes: u64,
    /// 0: no security archive.
    pub security_archive_bytes: u64,
    /// 0: no conservation.
    pub conservation_bytes: u64,
    pub sms_notification: bool,
    pub antispam: bool,
    pub webmail: bool,
    pub mass_sending: bool,
    /// Mass sends granted at activation (only where mass sending is included).
    pub free_mass_sends: u32,
    pub einvoice_viewer: bool,
    pub phishing_protection: bool,
    pub password_protection: bool,
}

impl Entitlements {
    /// Whether the plan includes `feature`.
    pub fn includes(&self, feature: Feature) -> bool {
        match feature {
            Feature::SecurityArchive => self.security_archive_bytes > 0,
            Feature::Conservation => self.conservation_bytes > 0,
            Feature::SmsNotification => self.sms_notification,
            Feature::Antispam => self.antispam,
            Feature::Webmail => self.webmail,
            Feature::MassSending => self.mass_sending,
            Feature::EInvoiceViewer => self.einvoice_viewer,
            Feature::PhishingProtection => self.phishing_protection,
            Feature::PasswordProtection => self.password_protection,
        }
    }
}

impl Plan {
    /// Every plan, in the sheet's order.
    pub const ALL: [Plan; 9] = [
        Plan::Base,
        Plan::Standard,
        Plan::Pro,
        Plan::Plus,
        Plan::Bronze,
        Plan::Silver,
        Plan::SilverPlus,
        Plan::Gold,
        Plan::GoldPlus,
    ];

    /// The sheet's row for this plan: the one place the offer is written down.
    pub fn entitlements(self) -> Entitlements {
        const NONE: Entitlements = Entitlements {
            inbox_bytes: GIB,
            security_archive_bytes: 0,
            conservation_bytes: 0,
            sms_notification: false,
            antispam: false,
            webmail: true,
            mass_sending: false,
            free_mass_sends: 0,
            einvoice_viewer: false,
            phishing_protection: false,
            password_protection: false,
        };
        match self {
            Plan::Base => NONE,
            Plan::Standard => Entitlements {
                security_archive_bytes: GIB,
                antispam: true,
                password_protection: true,
                ..NONE
            },
            Plan::Pro => Entitlements {
                security_archive_bytes: 3 * GIB,
                conservation_bytes: GIB,
                sms_notification: true,
                antispam: true,
                mass_sending: true,
                free_mass_sends: FREE_MASS_SENDS_AT_ACTIVATION,
                phishing_protection: true,
                password_protection: true,
                ..NONE
            },
            Plan::Plus => Entitlements {
                security_archive_bytes: 5 * GIB,
                conservation_bytes: 3 * GIB,
                sms_notification: true,
                antispam: true,
                mass_sending: true,
                free_mass_sends: FREE_MASS_SENDS_AT_ACTIVATION,
                einvoice_viewer: true,
                phishing_protection: true,
                password_protection: true,
                ..NONE
            },
            Plan::Bronze => Entitlements {
                inbox_bytes: 2 * GIB,
                antispam: true,
                ..NONE
            },
            Plan::Silver => Entitlements {
                inbox_bytes: 2 * GIB,
                security_archive_bytes: 2 * GIB,
                sms_notification: true,
                antispam: true,
                phishing_protection: true,
                password_protection: true,
                ..NONE
            },
            Plan::SilverPlus => Entitlements {
                conservation_bytes: GIB,
                mass_sending: true,
                einvoice_viewer: true,
                ..Plan::Silver.entitlements()
            },
            Plan::Gold => Entitlements {
                inbox_bytes: 5 * GIB,
                security_archive_bytes: 13 * GIB,
                sms_notification: true,
                antispam: true,
                einvoice_viewer: true,
                phishing_protection: true,
                password_protection: true,
                ..NONE
            },
            Plan::GoldPlus => Entitlements {
                conservation_bytes: 5 * GIB,
                mass_sending: true,
                ..Plan::Gold.entitlements()
            },
        }
    }

    /// The inbox size of the plan without expansions.
    pub fn inbox_bytes(self) -> u64 {
        self.entitlements().inbox_bytes
    }

    /// The stored and command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Plan::Base => "base",
            Plan::Standard => "standard",
            Plan::Pro => "pro",
            Plan::Plus => "plus",
            Plan::Bronze => "bronze",
            Plan::Silver => "silver",
            Plan::SilverPlus => "silver-plus",
            Plan::Gold => "gold",
            Plan::GoldPlus => "gold-plus",
        }
    }

    /// The name on the sheet.
    pub fn label(self) -> &'static str {
        match self {
            Plan::Base => "Base",
            Plan::Standard => "Standard",
            Plan::Pro => "Pro",
            Plan::Plus => "Plus",
            Plan::Bronze => "Bronze",
            Plan::Silver => "Silver",
            Plan::SilverPlus => "Silver Plus",
            Plan::Gold => "Gold",
            Plan::GoldPlus => "Gold Plus",
        }
    }

    /// Parses a plan name: case-insensitive, `silver-plus`, `silver_plus`, `silverplus` and
    /// `Silver Plus` alike.
    pub fn parse(name: &str) -> Option<Plan> {
        let key: String = name
            .trim()
            .chars()
            .filter(|c| !matches!(c, '-' | '_' | ' '))
            .collect::<String>()
            .to_ascii_lowercase();
        Plan::ALL
            .into_iter()
            .find(|p| p.as_str().replace('-', "") == key)
    }

    /// Every plan name, for error messages.
    pub fn names() -> String {
        Plan::ALL.map(Plan::as_str).join(", ")
    }

    /// The plans that include `feature`, in the sheet's order.
    pub fn including(feature: Feature) -> Vec<Plan> {
        Plan::ALL
            .into_iter()
            .filter(|p| p.entitlements().includes(feature))
            .collect()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A feature asked of a plan that does not include it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{feature} is not included in the {plan} plan; it is in {}",
    list(included_in)
)]
pub struct NotEntitled {
    pub feature: Feature,
    pub plan: Plan,
    /// The plans that include it.
    pub included_in: Vec<Plan>,
}

fn list(plans: &[Plan]) -> String {
    match plans {
        [] => "no plan".to_string(),
        [one] => one.label().to_string(),
        [init @ .., last] => format!(
            "{} and {}",
            init.iter()
                .map(|p| p.label())
                .collect::<Vec<_>>()
                .join(", "),
            last.label()
        ),
    }
}

/// What every feature calls before acting: `Ok` if `plan` includes `feature`, otherwise the
/// error naming the plans that do.
pub fn require(plan: Plan, feature: Feature) -> Result<(), NotEntitled> {
    if plan.entitlements().includes(feature) {
        Ok(())
    } else {
        Err(NotEntitled {
            feature,
            plan,
            included_in: Plan::including(feature),
        })
    }
}

/// A limit the usage exceeds, with the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excess {
    /// `inbox`, `security archive` or `conservation`.
    pub what: &'static str,
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

impl fmt::Display for Excess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} holds {} bytes ({}) and the new limit is {} bytes ({})",
            self.what,
            self.used_bytes,
            gib(self.used_bytes),
            self.limit_bytes,
            gib(self.limit_bytes)
        )
    }
}

/// `1.40 GB` (GiB, two decimals).
pub fn gib(bytes: u64) -> String {
    // Exact to two decimals without floating point: hundredths of a GiB, rounded down.
    let hundredths = u128::from(bytes) * 100 / u128::from(GIB);
    format!("{}.{:02} GB", hundredths / 100, hundredths % 100)
}

/// Why a plan, an expansion or a plan change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("unknown plan {0:?} (plans: {plans})", plans = Plan::names())]
    UnknownPlan(String),
    #[error("an expansion of {0} GB is not sold: expansions are 1, 3 or 5 GB (0 for none)")]
    Expansion(u32),
    #[error("{0} GB of expansions is more than the maximum of {MAX_EXPANSIONS_GB}")]
    TooManyExpansions(u32),
    #[error("cannot move from {from} to {to}: {}", excess.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("; "))]
    Exceeds {
        from: Plan,
        to: Plan,
        excess: Vec<Excess>,
    },
}

/// Kept for callers of the quota arithmetic.
pub type QuotaError = PlanError;

/// Parses a plan name into a [`PlanError::UnknownPlan`] error naming every plan.
pub fn parse_plan(name: &str) -> Result<Plan, PlanError> {
    Plan::parse(name).ok_or_else(|| PlanError::UnknownPlan(name.to_string()))
}

/// An expansion as sold: 0 (none), 1, 3 or 5 GB.
pub fn check_expansion(gb: u32) -> Result<u32, PlanError> {
    if gb == 0 || EXPANSION_PACKS_GB.contains(&gb) {
        Ok(gb)
    } else {
        Err(PlanError::Expansion(gb))
    }
}

/// The quota of a mailbox: plan inbox plus `expansions_gb` whole GiB.
pub fn quota_bytes(plan: Plan, expansions_gb: u32) -> Result<u64, PlanError> {
    if expansions_gb > MAX_EXPANSIONS_GB {
        return Err(PlanError::TooManyExpansions(expansions_gb));
    }
    Ok(plan.inbox_bytes() + u64::from(expansions_gb) * GIB)
}

/// Whether a transport envelope of `size` bytes fits a mailbox using `used` of `quota` bytes.
pub fn envelope_fits(used: u64, size: u64, quota: u64) -> bool {
    used.checked_add(size).is_some_and(|total| total <= quota)
}

/// What a mailbox holds, per limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub inbox_bytes: u64,
    pub security_archive_bytes: u64,
    pub conservation_bytes: u64,
}

/// What a plan change is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Nothing smaller and nothing lost.
    Upgrade,
    /// Something smaller or lost (allowed when the usage fits).
    Downgrade,
    /// Same plan and expansion.
    Unchanged,
}

/// An accepted plan change: it takes effect at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanChange {
    pub kind: ChangeKind,
    pub plan: Plan,
    pub expansion_gb: u32,
    /// The new inbox quota (plan plus expansion).
    pub quota_bytes: u64,
    pub features_gained: Vec<Feature>,
    pub features_lost: Vec<Feature>,
}

/// Decides a change from `from` (+`from_expansion_gb`) to `to` (+`to_expansion_gb`, one of the
/// packs sold) for a mailbox holding `usage`.
pub fn change(
    from: Plan,
    from_expansion_gb: u32,
    to: Plan,
    to_expansion_gb: u32,
    usage: Usage,
) -> Result<PlanChange, PlanError> {
    let to_expansion_gb = check_expansion(to_expansion_gb)?;
    let old = from.entitlements();
    let new = to.entitlements();
    let old_quota = quota_bytes(from, from_expansion_gb)?;
    let new_quota = quota_bytes(to, to_expansion_gb)?;
    let features_gained: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| new.includes(*f) && !old.includes(*f))
        .collect();
    let features_lost: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| old.includes(*f) && !new.includes(*f))
        .collect();
    let limits = [
        ("inbox", old_quota, new_quota, usage.inbox_bytes),
        (
            "security archive",
            old.security_archive_bytes,
            new.security_archive_bytes,
            usage.security_archive_bytes,
        ),
        (
            "conservation",
            old.conservation_bytes,
            new.conservation_bytes,
            usage.conservation_bytes,
        ),
    ];
    let smaller = limits.iter().any(|(_, o, n, _)| n < o);
    let kind = if from == to && from_expansion_gb == to_expansion_gb {
        ChangeKind::Unchanged
    } else if !smaller && features_lost.is_empty() {
        ChangeKind::Upgrade
    } else {
        ChangeKind::Downgrade
    };
    if kind == ChangeKind::Downgrade {
        let excess: Vec<Excess> = limits
            .iter()
            .filter(|(_, _, n, used)| used > n)
            .map(|(what, _, n, used)| Excess {
                what,
                used_bytes: *used,
                limit_bytes: *n,
            })
            .collect();
        if !excess.is_empty() {
            return Err(PlanError::Exceeds { from, to, excess });
        }
    }
    Ok(PlanChange {
        kind,
        plan: to,
        expansion_gb: to_expansion_gb,
        quota_bytes: new_quota,
        features_gained,
        features_lost,
    })
}

/// The sheet as a Markdown table (the golden file and the operator's guide show it).
pub fn sheet_markdown() -> String {
    let yes = |b: bool| if b { "yes" } else { "—" };
    let size = |b: u64| {
        if b == 0 {
            "—".to_string()
        } else {
            format!("{} GB", b / GIB)
        }
    };
    let mut out = String::from(
        "| Plan | Inbox | Security archive | Conservation | SMS notification | Antispam | Webmail | Mass sending | E-invoice viewer | Phishing protection | Password protection |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for p in Plan::ALL {
        let e = p.entitlements();
        let mass = match (e.mass_sending, e.free_mass_sends) {
            (false, _) => "—".to_string(),
            (true, 0) => "yes".to_string(),
            (true, n) => format!("yes, {n} free at activation"),
        };
        out.push_str(&format!(
            "| {} (`{}`) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            p.label(),
            p.as_str(),
            size(e.inbox_bytes),
            size(e.security_archive_bytes),
            size(e.conservation_bytes),
            yes(e.sms_notification),
            yes(e.antispam),
            yes(e.webmail),
            mass,
            yes(e.einvoice_viewer),
            yes(e.phishing_protection),
            yes(e.password_protection),
        ));
    }
    out.push_str(&format!(
        "\nExpansions: {} GB on top of the inbox. 1 GB = 1 GiB = {GIB} bytes.\n",
        EXPANSION_PACKS_GB.map(|g| g.to_string()).join(", ")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sizes_are_the_offer() {
        for p in [Plan::Base, Plan::Standard, Plan::Pro, Plan::Plus] {
            assert_eq!(p.inbox_bytes(), 1_073_741_824);
        }
        for p in [Plan::Bronze, Plan::Silver, Plan::SilverPlus] {
            assert_eq!(p.inbox_bytes(), 2 * GIB);
        }
        assert_eq!(Plan::Gold.inbox_bytes(), 5 * GIB);
        assert_eq!(Plan::GoldPlus.inbox_bytes(), 5 * GIB);
        assert_eq!(Plan::Gold.entitlements().security_archive_bytes, 13 * GIB);
        assert_eq!(quota_bytes(Plan::Standard, 1), Ok(2 * GIB));
        assert_eq!(quota_bytes(Plan::Gold, 3), Ok(8 * GIB));
        assert_eq!(
            quota_bytes(Plan::Gold, MAX_EXPANSIONS_GB + 1),
            Err(PlanError::TooManyExpansions(MAX_EXPANSIONS_GB + 1))
        );
    }

    #[test]
    fn names_round_trip() {
        for p in Plan::ALL {
            assert_eq!(Plan::parse(p.as_str()), Some(p));
            assert_eq!(Plan::parse(&p.as_str().to_uppercase()), Some(p));
            assert_eq!(Plan::parse(p.label()), Some(p));
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(json, format!("\"{}\"", p.as_str()));
            assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), p);
        }
        assert_eq!(Plan::parse("silver_plus"), Some(Plan::SilverPlus));
        assert_eq!(Plan::parse("goldplus"), Some(Plan::GoldPlus));
        assert_eq!(Plan::parse("platinum"), None);
        assert_eq!(Plan::parse(""), None);
        assert_eq!(
            parse_plan("platinum").unwrap_err().to_string(),
            "unknown plan \"platinum\" (plans: base, standard, pro, plus, bronze, silver, \
             silver-plus, gold, gold-plus)"
        );
    }

    #[test]
    fn the_limit_is_inclusive_and_never_overflows() {
        assert!(envelope_fits(0, GIB, GIB));
        assert!(envelope_fits(GIB - 10, 10, GIB));
        assert!(!envelope_fits(GIB - 10, 11, GIB));
        assert!(!envelope_fits(u64::MAX, 1, u64::MAX));
    }

    #[test]
    fn every_feature_asks_the_table_and_names_the_plans_that_have_it() {
        assert_eq!(require(Plan::Pro, Feature::MassSending), Ok(()));
        let e = require(Plan::Standard, Feature::MassSending).unwrap_err();
        assert_eq!(
            e.to_string(),
            "mass sending is not included in the Standard plan; it is in Pro, Plus, Silver Plus \
             and Gold Plus"
        );
        assert_eq!(
            require(Plan::Base, Feature::Webmail),
            Ok(()),
            "every plan reads its PEC in the browser"
        );
        for f in Feature::ALL {
            assert!(!Plan::including(f).is_empty(), "{f} is sold somewhere");
            for p in Plan::ALL {
                assert_eq!(
                    require(p, f).is_ok(),
                    Plan::including(f).contains(&p),
                    "{p} {f}"
                );
            }
        }
        assert_eq!(
            Plan::ALL.map(|p| p.entitlements().free_mass_sends),
            [0, 0, 50, 50, 0, 0, 0, 0, 0],
            "50 free sends at activation for Pro and Plus only"
        );
    }

    #[test]
    fn the_plus_plans_are_their_base_plan_and_more() {
        for (base, plus) in [
            (Plan::Silver, Plan::SilverPlus),
            (Plan::Gold, Plan::GoldPlus),
        ] {
            let c = change(base, 0, plus, 0, Usage::default()).unwrap();
            assert_eq!(c.kind, ChangeKind::Upgrade, "{base} → {plus}");
            assert!(c.features_lost.is_empty());
            assert!(c.features_gained.contains(&Feature::Conservation));
        }
    }

    #[test]
    fn expansions_are_the_packs_sold() {
        for gb in [0, 1, 3, 5] {
            assert_eq!(check_expansion(gb), Ok(gb));
        }
        for gb in [2, 4, 6, 1000] {
            assert_eq!(check_expansion(gb), Err(PlanError::Expansion(gb)));
        }
        assert_eq!(
            change(Plan::Base, 0, Plan::Base, 2, Usage::default()),
            Err(PlanError::Expansion(2))
        );
    }

    #[test]
    fn upgrades_take_effect_and_downgrades_must_fit() {
        let up = change(Plan::Standard, 0, Plan::Gold, 0, Usage::default()).unwrap();
        assert_eq!(up.kind, ChangeKind::Upgrade);
        assert_eq!(up.quota_bytes, 5 * GIB);
        assert_eq!(
            change(Plan::Gold, 0, Plan::Gold, 0, Usage::default())
                .unwrap()
                .kind,
            ChangeKind::Unchanged
        );
        let more = change(Plan::Base, 0, Plan::Base, 3, Usage::default()).unwrap();
        assert_eq!(
            (more.kind, more.quota_bytes),
            (ChangeKind::Upgrade, 4 * GIB)
        );

        // Gold with 1.5 GB in the inbox fits Standard's 1 GB plus a 1 GB expansion, not Standard.
        let usage = Usage {
            inbox_bytes: GIB + GIB / 2,
            ..Usage::default()
        };
        let down = change(Plan::Gold, 0, Plan::Standard, 1, usage).unwrap();
        assert_eq!(down.kind, ChangeKind::Downgrade);
        assert_eq!(down.quota_bytes, 2 * GIB);
        assert!(down.features_lost.contains(&Feature::SmsNotification));
        let refused = change(Plan::Gold, 0, Plan::Standard, 0, usage).unwrap_err();
        assert_eq!(
            refused,
            PlanError::Exceeds {
                from: Plan::Gold,
                to: Plan::Standard,
                excess: vec![Excess {
                    what: "inbox",
                    used_bytes: 1_610_612_736,
                    limit_bytes: 1_073_741_824
                }],
            }
        );
        assert_eq!(
            refused.to_string(),
            "cannot move from Gold to Standard: the inbox holds 1610612736 bytes (1.50 GB) and \
             the new limit is 1073741824 bytes (1.00 GB)"
        );

        // A conservation archive in use blocks moving to a plan without (or with less).
        let kept = Usage {
            conservation_bytes: 10,
            ..Usage::default()
        };
        let e = change(Plan::Pro, 0, Plan::Standard, 0, kept).unwrap_err();
        assert!(
            matches!(&e, PlanError::Exceeds { excess, .. } if excess[0].what == "conservation")
        );
        // Lateral moves (something more, something less) are downgrades: they must fit.
        assert_eq!(
            change(Plan::Plus, 0, Plan::Bronze, 0, Usage::default())
                .unwrap()
                .kind,
            ChangeKind::Downgrade
        );
    }

    #[test]
    fn sizes_read_in_gb() {
        assert_eq!(gib(0), "0.00 GB");
        assert_eq!(gib(GIB), "1.00 GB");
        assert_eq!(gib(GIB + GIB / 2), "1.50 GB");
        assert_eq!(gib(u64::MAX), "17179869183.99 GB");
    }
}
