//! A per-thread cache of the policies a thread checked lately, so that a check touches no
//! shared reference count: one relaxed read of the policy's generation, and the cached copy if
//! it is current. Without it every check paid two atomic read-modify-writes to borrow the
//! policy (a lock, or an `ArcSwap` guard), about as much as the decision itself.

use std::cell::RefCell;
use std::sync::Arc;

use super::access::PolicyState;
use crate::handler::Principal;

/// Policies a thread keeps; the oldest is dropped beyond this.
const KEPT: usize = 16;

/// One cached policy: whose (the access state's id), at which generation, and the last
/// decision made under it for a shared principal. The memo holds the principal itself, so its
/// address cannot be reused for another while it is remembered.
struct Seen {
    owner: u64,
    generation: u64,
    policy: Arc<PolicyState>,
    memo: Option<(Arc<Principal>, bool)>,
}

thread_local! {
    static SEEN: RefCell<Vec<Seen>> = const { RefCell::new(Vec::new()) };
}

/// The position of `owner`'s policy at `generation` in `seen`, loaded (and any memo
/// forgotten) if it is not there or older. `load` must return a policy at least as new as
/// `generation` (read after it), so that a cached copy is never older than its generation.
fn entry(
    seen: &mut Vec<Seen>,
    owner: u64,
    generation: u64,
    load: impl Fn() -> Arc<PolicyState>,
) -> usize {
    let fresh = || Seen {
        owner,
        generation,
        policy: load(),
        memo: None,
    };
    match seen.iter().position(|s| s.owner == owner) {
        Some(at) => {
            if seen[at].generation != generation {
                seen[at] = fresh();
            }
            at
        }
        None => {
            if seen.len() >= KEPT {
                seen.remove(0);
            }
            seen.push(fresh());
            seen.len() - 1
        }
    }
}

/// Runs `f` on the policy of `owner` at `generation`: the cached copy when it is current,
/// otherwise the one `load` returns (then cached).
pub(super) fn with_policy<R>(
    owner: u64,
    generation: u64,
    load: impl Fn() -> Arc<PolicyState>,
    f: impl Fn(&PolicyState) -> R,
) -> R {
    let cached = SEEN.try_with(|seen| {
        // A check runs no user code and never re-enters this cache; a borrow in use (or a
        // thread being torn down) falls back to the shared copy.
        let mut seen = seen.try_borrow_mut().ok()?;
        let at = entry(&mut seen, owner, generation, &load);
        Some(f(&seen[at].policy))
    });
    cached.ok().flatten().unwrap_or_else(|| f(&load()))
}

/// As [`with_policy`] for a yes-or-no decision about `principal`: the thread's last decision
/// for this very principal under the current policy, or `decide`'s (then remembered).
pub(super) fn decide_for(
    owner: u64,
    generation: u64,
    principal: &Arc<Principal>,
    load: impl Fn() -> Arc<PolicyState>,
    decide: impl Fn(&PolicyState) -> bool,
) -> bool {
    let cached = SEEN.try_with(|seen| {
        let mut seen = seen.try_borrow_mut().ok()?;
        let at = entry(&mut seen, owner, generation, &load);
        let seen = &mut seen[at];
        if let Some((memo, allowed)) = &seen.memo {
            if Arc::ptr_eq(memo, principal) {
                return Some(*allowed);
            }
        }
        let allowed = decide(&seen.policy);
        seen.memo = Some((Arc::clone(principal), allowed));
        Some(allowed)
    });
    cached.ok().flatten().unwrap_or_else(|| decide(&load()))
}
