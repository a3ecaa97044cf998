//! Tenant and mailbox administration over the ports (issue #13): what `pec tenant`, `pec
//! mailbox` and the API's admin routes call. The rules are `pec-core`'s ([`pec_core::plan`]);
//! this module reads, decides and writes with conditions, so two operators (or an operator and a
//! delivery) never leave a mailbox over its new limits.

use pec_core::plan::{self, Plan, PlanChange, PlanError, Usage};
use pec_ports::{StateError, StateStore};

/// How many times a conditional write is retried over fresh reads before giving up.
const RETRIES: usize = 5;

/// Why an administrative operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no mailbox {0}")]
    NoMailbox(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("mailbox {0} kept changing while the plan was changed; nothing was changed, try again")]
    Contended(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// Moves a mailbox to `to` with an expansion of `expansion_gb` (0, 1, 3 or 5 GB): an upgrade at
/// once; a downgrade at once if what the mailbox holds fits the new limits, refused with the
/// numbers otherwise ([`plan::change`]). Conditional on the record read and, for a downgrade, on
/// the usage still fitting when written (a delivery may land in between).
///
/// Only the inbox usage is measured today; the security archive and conservation are counted as
/// empty until their stores report usage.
pub async fn change_plan<Db: StateStore>(
    state: &Db,
    address: &str,
    to: Plan,
    expansion_gb: u32,
) -> Result<PlanChange, AdminError> {
    for _ in 0..RETRIES {
        let current = state
            .mailbox(address)
            .await?
            .ok_or_else(|| AdminError::NoMailbox(address.to_string()))?;
        let decided = plan::change(
            current.plan,
            current.expansions_gb,
            to,
            expansion_gb,
            Usage {
                inbox_bytes: current.used_bytes,
                ..Usage::default()
            },
        )?;
        if decided.kind == plan::ChangeKind::Unchanged {
            return Ok(decided);
        }
        let new = pec_ports::Mailbox {
            plan: decided.plan,
            expansions_gb: decided.expansion_gb,
            quota_bytes: decided.quota_bytes,
            ..current.clone()
        };
        let max_used = (decided.kind == plan::ChangeKind::Downgrade).then_some(decided.quota_bytes);
        if state.replace_mailbox(&current, &new, max_used).await? {
            return Ok(decided);
        }
    }
    Err(AdminError::Contended(address.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use pec_core::plan::{ChangeKind, GIB};
    use pec_ports::{Mailbox, MailboxItem, MemoryState};

    fn mailbox(address: &str, plan: Plan) -> Mailbox {
        Mailbox {
            address: address.into(),
            tenant: "t".into(),
            plan,
            expansions_gb: 0,
            quota_bytes: plan.inbox_bytes(),
            used_bytes: 0,
            password_hash: "x".into(),
            locked: false,
            refuse_ordinary: false,
            created_at: Utc.timestamp_opt(0, 0).unwrap(),
        }
    }

    async fn fill(state: &MemoryState, address: &str, bytes: u64) {
        let item = MailboxItem {
            id: "big".into(),
            object_key: "k".into(),
            size: bytes,
            kind: "busta-trasporto".into(),
            subject: String::new(),
            from: String::new(),
            identificativo: String::new(),
            evidence_key: String::new(),
            stored_at: Utc.timestamp_opt(1, 0).unwrap(),
        };
        state
            .store_in_mailbox(address, &item, None, false)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn upgrades_apply_downgrades_must_fit() {
        let state = MemoryState::new();
        let a = "mario.rossi@ordine.example.test";
        state.create_mailbox(&mailbox(a, Plan::Gold)).await.unwrap();
        fill(&state, a, GIB + GIB / 2).await;

        let e = change_plan(&state, a, Plan::Base, 0).await.unwrap_err();
        assert!(
            e.to_string()
                .contains("the inbox holds 1610612736 bytes (1.50 GB) and the new limit is 1073741824"),
            "{e}"
        );
        assert_eq!(state.mailbox(a).await.unwrap().unwrap().plan, Plan::Gold);

        let down = change_plan(&state, a, Plan::Base, 1).await.unwrap();
        assert_eq!((down.kind, down.quota_bytes), (ChangeKind::Downgrade, 2 * GIB));
        let m = state.mailbox(a).await.unwrap().unwrap();
        assert_eq!((m.plan, m.expansions_gb, m.quota_bytes), (Plan::Base, 1, 2 * GIB));
        assert_eq!(m.used_bytes, GIB + GIB / 2, "usage kept");

        let up = change_plan(&state, a, Plan::GoldPlus, 5).await.unwrap();
        assert_eq!((up.kind, up.quota_bytes), (ChangeKind::Upgrade, 10 * GIB));
        assert_eq!(
            change_plan(&state, a, Plan::GoldPlus, 5).await.unwrap().kind,
            ChangeKind::Unchanged
        );
        assert!(matches!(
            change_plan(&state, a, Plan::Gold, 2).await,
            Err(AdminError::Plan(PlanError::Expansion(2)))
        ));
        assert!(matches!(
            change_plan(&state, "nobody@ordine.example.test", Plan::Gold, 0).await,
            Err(AdminError::NoMailbox(_))
        ));
    }
}
