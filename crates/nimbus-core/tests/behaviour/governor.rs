//! The CPU-share governor: a governed handler takes the wall time its share of a vCPU gives
//! its CPU time; at a full share or with the governor off it runs at full speed; a handler
//! that never yields has its output held until its CPU is paid for; the wait counts toward
//! the timeout.
//!
//! CPU time does not pause with Tokio's test clock, so these tests run in real time; each
//! burns about 100 ms of CPU and takes at most about 400 ms. They take turns (two of them
//! burning at once on a small machine would each run at half speed), and the machine is
//! shared, so the bounds are ±25 %, and full speed is measured against the wall time the
//! handler itself was busy (its CPU time plus what preemption added, which no governor
//! decides).

use std::time::{Duration, Instant};

use nimbus_core::{handler_fn, Context, Function, FunctionError, InvokeError, InvokeOptions};
use nix::time::{clock_gettime, ClockId};

use crate::support::runtime;

/// Held by each test while it burns CPU.
static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Chunks of CPU work per invocation.
const CHUNKS: u32 = 20;
/// CPU time of one chunk.
const CHUNK: Duration = Duration::from_millis(5);

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .expect("thread CPU clock")
}

/// What the handler measured of itself: the CPU time its chunks used and the wall time they
/// took (which is more than the CPU time when the machine preempts the thread).
#[derive(Debug, Clone, Copy)]
struct Burnt {
    cpu: Duration,
    busy: Duration,
}

/// A function that burns `CHUNKS` chunks of `CHUNK` CPU time, yielding between them if its
/// event says so.
fn burner(memory_mb: u32, governed: bool) -> Function<bool, (u64, u64)> {
    Function::new(
        "burner",
        handler_fn(|yields: bool, _ctx: Context| async move {
            let mut cpu = Duration::ZERO;
            let mut busy = Duration::ZERO;
            for _ in 0..CHUNKS {
                let (wall, from) = (Instant::now(), thread_cpu());
                while thread_cpu() - from < CHUNK {
                    std::hint::spin_loop();
                }
                cpu += thread_cpu() - from;
                busy += wall.elapsed();
                if yields {
                    tokio::task::yield_now().await;
                }
            }
            Ok::<_, FunctionError>((cpu.as_micros() as u64, busy.as_micros() as u64))
        }),
    )
    .with_memory_mb(memory_mb)
    .with_cpu_governor(governed)
}

/// Invokes once; the handler's own measure, the invocation's wall time, its reported duration.
async fn burn(function: Function<bool, (u64, u64)>, yields: bool) -> (Burnt, Duration, Duration) {
    let _turn = TURNS.lock().await;
    let rt = runtime(10);
    let handle = rt.register(function).await.expect("registered");
    let start = Instant::now();
    let invocation = handle.invoke_with(yields, InvokeOptions::default()).await;
    let wall = start.elapsed();
    let (cpu, busy) = invocation.result.expect("output");
    let report = invocation.report.expect("a report");
    let burnt = Burnt {
        cpu: Duration::from_micros(cpu),
        busy: Duration::from_micros(busy),
    };
    (burnt, wall, report.duration)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

#[tokio::test]
async fn a_governed_handler_takes_its_cpu_time_over_its_share() {
    // 442 MB: a quarter of a vCPU.
    let (burnt, wall, duration) = burn(burner(442, true), true).await;
    let expected = burnt.cpu.div_f64(442.0 / 1769.0);
    let r = ratio(wall, expected);
    eprintln!("governed 442 MB, yielding: cpu {burnt:?}, wall {wall:?}, wall/(cpu/share) {r:.3}");
    assert!((0.75..=1.25).contains(&r), "wall/(cpu/share) = {r:.3}");
    // The wait is part of the invocation, as Lambda's slower CPU would be.
    assert!(ratio(duration, expected) >= 0.75, "duration {duration:?}");
}

#[tokio::test]
async fn at_a_full_share_or_ungoverned_a_handler_runs_at_full_speed() {
    for (memory_mb, governed) in [(1769, true), (442, false)] {
        let (burnt, wall, _) = burn(burner(memory_mb, governed), true).await;
        // Against the time the handler was busy: nothing was added to it.
        let r = ratio(wall, burnt.busy);
        eprintln!(
            "{memory_mb} MB, governor {governed}: cpu {burnt:?}, wall {wall:?}, wall/cpu {:.3}, \
             wall/busy {r:.3}",
            ratio(wall, burnt.cpu)
        );
        assert!(r <= 1.25, "wall/busy = {r:.3}");
    }
}

#[tokio::test]
async fn a_handler_that_never_yields_has_its_output_held_until_its_cpu_is_paid_for() {
    let (burnt, wall, _) = burn(burner(442, true), false).await;
    let expected = burnt.cpu.div_f64(442.0 / 1769.0);
    let r = ratio(wall, expected);
    eprintln!(
        "governed 442 MB, not yielding: cpu {burnt:?}, wall {wall:?}, wall/(cpu/share) {r:.3}"
    );
    // It ran in one poll, done well before its CPU was paid for (unless the machine is so
    // loaded that the test cannot tell) ...
    assert!(
        ratio(burnt.busy, expected) < 0.75,
        "busy {burnt:?}, machine too loaded"
    );
    // ... and its output waited until it was.
    assert!((0.75..=1.25).contains(&r), "wall/(cpu/share) = {r:.3}");
}

#[tokio::test]
async fn the_governors_wait_counts_toward_the_timeout() {
    // 100 ms of CPU at a quarter share is due at 400 ms: past a 200 ms timeout.
    let _turn = TURNS.lock().await;
    let rt = runtime(10);
    let handle = rt
        .register(burner(442, true).with_timeout(Duration::from_millis(200)))
        .await
        .expect("registered");
    let start = Instant::now();
    let result = handle.invoke(false).await;
    let wall = start.elapsed();
    assert!(
        matches!(result, Err(InvokeError::Timeout(t)) if t == Duration::from_millis(200)),
        "{result:?}"
    );
    assert!(
        wall < Duration::from_millis(350),
        "timed out after {wall:?}"
    );
}
