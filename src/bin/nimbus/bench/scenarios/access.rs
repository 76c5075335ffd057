//! What authorisation costs: a sync invoke by a caller the function's policy must decide on
//! (six statements with conditions, the allowing one last), beside the same invoke by the same
//! caller on a runtime with the permission model off.

use std::time::Duration;

use nimbus::permission::Permission;
use nimbus::{Function, FunctionHandle, Principal, Runtime, RuntimeConfig};

use super::throughput::closed_loop;
use super::{measure, noop, Measure, Sizes};
use crate::bench::stats::{median, round1, Row};

/// The caller: an identity of another account, in an organization.
fn caller() -> Principal {
    Principal::Identity {
        arn: "arn:aws:iam::444455556666:role/reader".into(),
        account: "444455556666".into(),
        org_id: Some("o-bench".into()),
    }
}

/// A runtime with the guarded function and its six-statement policy, enforced or not; the
/// function's handle acting as the caller.
async fn guarded(enforced: bool) -> (Runtime, FunctionHandle<u64, u64>) {
    let runtime = Runtime::new(
        RuntimeConfig::default()
            .with_concurrency_limit(10_000)
            .with_permissions_required(true)
            .with_permissions_enforced(enforced),
    )
    .expect("config");
    let handle = runtime
        .register(Function::new("guarded", noop()))
        .await
        .expect("register");
    let grants = [
        Permission::new("s3", "lambda:InvokeFunction", "s3.amazonaws.com")
            .with_source_arn("arn:aws:s3:::uploads-*")
            .with_source_account("111122223333"),
        Permission::new("sns", "lambda:InvokeFunction", "sns.amazonaws.com")
            .with_source_arn("arn:aws:sns:us-east-1:111122223333:alerts"),
        Permission::new("partner", "lambda:InvokeFunction", "777788889999"),
        Permission::new("url", "lambda:InvokeFunctionUrl", "*").with_function_url_auth_type("NONE"),
        Permission::new("events", "lambda:InvokeFunction", "events.amazonaws.com")
            .with_source_account("111122223333"),
        Permission::new("org", "lambda:InvokeFunction", "444455556666")
            .with_principal_org_id("o-bench"),
    ];
    for grant in &grants {
        runtime
            .add_permission("guarded", grant, None)
            .expect("a valid grant");
    }
    let acting = handle.acting_as(caller());
    assert!(
        acting.invoke(0).await.is_ok(),
        "the last statement allows the caller"
    );
    (runtime, acting)
}

/// A closed loop of sync invokes through `handle` from one caller.
fn invokes(handle: FunctionHandle<u64, u64>, n: u64) -> Measure {
    measure(move || {
        let h = handle.clone();
        closed_loop(n, 1, move |i| {
            let h = h.clone();
            async move {
                std::hint::black_box(h.invoke(i).await.ok());
            }
        })
    })
}

/// As [`invokes`], with a principal made anew for every call (as a front end that builds one
/// per request does): no decision can be remembered.
fn invokes_fresh(handle: FunctionHandle<u64, u64>, n: u64) -> Measure {
    let principal = caller();
    measure(move || {
        let (h, p) = (handle.clone(), principal.clone());
        closed_loop(n, 1, move |i| {
            let h = h.acting_as(p.clone());
            async move {
                std::hint::black_box(h.invoke(i).await.ok());
            }
        })
    })
}

/// Runs `checked` and `unchecked` in alternating pairs (`reps` × 4 of `per_run` events, the
/// order swapped each time); the rows, and the median of the pairs' cost in percent.
async fn paired(
    scenario: &str,
    per_run: u64,
    reps: usize,
    mut checked: Measure,
    mut unchecked: Measure,
) -> Vec<Row> {
    let (mut took_on, mut took_off, mut costs) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..reps * 4 {
        let (with, without) = if pair % 2 == 0 {
            let with = checked().await;
            (with, unchecked().await)
        } else {
            let without = unchecked().await;
            (checked().await, without)
        };
        // Over the same events, the ratio of rates is the inverse ratio of times.
        costs.push((1.0 - without.as_secs_f64() / with.as_secs_f64()) * 100.0);
        took_on.push(with);
        took_off.push(without);
    }
    vec![
        Row::repeated(scenario, "nimbus", per_run, &took_on)
            .with("auth_cost_pct", round1(median(&costs)))
            .with("pairs", costs.len() as u64),
        Row::repeated(scenario, "nimbus, permissions off", per_run, &took_off),
    ]
}

/// Sync invoke of a no-op function by a non-host caller, 1 caller, closed loop: checked
/// against a policy of six statements with conditions, and with the permission model off;
/// once through one handle (the thread remembers its decision until the policy changes) and
/// once with a principal made for every call (every call decided in full).
///
/// The cost is a few percent of an invocation, less than a shared machine's drift over a
/// second: so the two run in short alternating pairs, and the cost is the median of the
/// pairs' ratios, each pair measured in the same moment.
pub(crate) async fn access(sizes: &Sizes) -> Vec<Row> {
    let (on, checked) = guarded(true).await;
    let (off, unchecked) = guarded(false).await;
    let per_run = (sizes.events / 4).max(1);
    let mut rows = paired(
        "auth/sync_1_caller",
        per_run,
        sizes.reps,
        invokes(checked.clone(), per_run),
        invokes(unchecked.clone(), per_run),
    )
    .await;
    rows.extend(
        paired(
            "auth/sync_1_caller_new_principal",
            per_run,
            sizes.reps,
            invokes_fresh(checked, per_run),
            invokes_fresh(unchecked, per_run),
        )
        .await,
    );
    on.shutdown(Duration::from_secs(1)).await;
    off.shutdown(Duration::from_secs(1)).await;
    rows
}
