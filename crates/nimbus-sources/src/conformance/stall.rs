//! Telling a broken adapter from a stalled machine. The kit runs in real time with a visibility
//! timeout of a second, so a loaded machine that stalls for that long can make a correct
//! adapter look wrong: a receipt expires before the kit uses it, a message reappears while
//! the kit thought it held it. A check that sees something wrong at a moment when that
//! could be the stall says so ([`Miss::Stalled`]) and is run again on a fresh queue, up to
//! [`ATTEMPTS`] times; what is wrong while no stall can explain it is a violation at once. A
//! stall therefore makes a check run again, never pass: an adapter that fails every attempt
//! fails the check.

use std::time::{Duration, Instant};

use super::{fail, Violation};
use crate::error::SourceError;

/// How many times a check is run when stalls keep making it inconclusive.
pub(super) const ATTEMPTS: u32 = 3;

/// Why a check did not pass.
#[derive(Debug)]
pub(super) enum Miss {
    /// The adapter broke a rule.
    Broken(Violation),
    /// What was seen may be a stall of the machine: run the check again.
    Stalled(Violation),
}

impl From<Violation> for Miss {
    fn from(violation: Violation) -> Self {
        Self::Broken(violation)
    }
}

/// What a check's run says: `None` to run it again (a stall, and attempts left), else the
/// outcome.
pub(super) fn verdict(outcome: Result<(), Miss>, attempt: u32) -> Option<Result<(), Violation>> {
    match outcome {
        Ok(()) => Some(Ok(())),
        Err(Miss::Broken(violation)) => Some(Err(violation)),
        Err(Miss::Stalled(violation)) if attempt >= ATTEMPTS => Some(Err(Violation {
            detail: format!(
                "{} (in each of {ATTEMPTS} attempts, at a moment when a stall of the machine \
                 past the visibility timeout could explain it)",
                violation.detail
            ),
            ..violation
        })),
        Err(Miss::Stalled(violation)) => {
            tracing::warn!(%violation, attempt, "conformance check inconclusive (a stall?); running it again");
            None
        }
    }
}

/// A broken rule, or a stall when `may_stall`.
pub(super) fn miss(check: &'static str, detail: impl Into<String>, may_stall: bool) -> Miss {
    if may_stall {
        Miss::Stalled(fail(check, detail))
    } else {
        Miss::Broken(fail(check, detail))
    }
}

/// Whether a receipt made by a receive that began at `began` may be past its visibility
/// timeout now (it cannot be before: the timeout starts after the receive began).
pub(super) fn may_have_expired(began: Instant, visibility: Duration) -> bool {
    began.elapsed() >= visibility
}

/// The answer of an ack, a release or a retry whose receipts came from a receive that began at
/// `began`, which should have taken effect: a refusal is a stall when the receipts may have
/// expired meanwhile, and a violation otherwise; any other error is a violation.
pub(super) fn settled(
    check: &'static str,
    what: &str,
    answer: Result<(), SourceError>,
    began: Instant,
    visibility: Duration,
) -> Result<(), Miss> {
    match answer {
        Ok(()) => Ok(()),
        Err(error @ (SourceError::Refused { .. } | SourceError::UnknownReceipt)) => Err(miss(
            check,
            format!("{what} with a current receipt answered {error:?}"),
            may_have_expired(began, visibility),
        )),
        Err(error) => Err(Miss::Broken(fail(
            check,
            format!("{what}: source error: {error}"),
        ))),
    }
}
