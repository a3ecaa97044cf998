//! Password protection at the API (issue #18): every password the API sets, for a mailbox
//! whose plan includes it, is checked against breach data first (`pec_ports::breach::screen`:
//! only a 5-hex-digit hash prefix leaves the provider). A breached password is refused with
//! `422 password-breached`, saying why and what to do (NIST SP 800-63B §5.1.1.2), and is
//! recorded for the monthly report; a breach source that cannot answer refuses with `503`
//! (fail closed: the caller retries; nothing was written).

use pec_ports::breach::{BreachError, Candidate, Screened, screen};

use crate::problem::{FieldError, Problem};
use crate::{App, Backend};

/// Checks `password` for `candidate`; `Ok` if it may be set.
pub(crate) async fn check<B: Backend>(
    app: &App<B>,
    candidate: Candidate<'_>,
    password: &str,
) -> Result<(), Problem> {
    match screen(
        &*app.breach,
        app.backend.state(),
        candidate,
        password,
        app.now(),
    )
    .await
    {
        Ok(Screened::NotInPlan | Screened::Clean) => Ok(()),
        Ok(Screened::Breached(band)) => {
            tracing::info!(mailbox = %candidate.mailbox, band = band.en(), "a breached password refused");
            Err(breached(band))
        }
        Err(e) => Err(unavailable(&e)),
    }
}

/// `422 password-breached`.
pub(crate) fn breached(band: pec_core::breach::Band) -> Problem {
    let detail = format!(
        "this password appears in known data breaches ({}): choose another, one you use \
         nowhere else; if you use this one anywhere, change it there too",
        band.en()
    );
    Problem {
        errors: vec![FieldError::new("/password", detail.clone())],
        ..Problem::new(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            "password-breached",
            "Password found in breach data",
            detail,
        )
    }
}

/// `503 breach-check-unavailable`: the check could not be made (fail closed).
pub(crate) fn unavailable(e: &BreachError) -> Problem {
    tracing::error!(error = %e, "password breach check unavailable");
    Problem {
        retry_after: Some(30),
        ..Problem::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "breach-check-unavailable",
            "Password check unavailable",
            "the password could not be checked against breach data, which this mailbox's plan \
             requires; nothing was changed: retry in a moment",
        )
    }
}
