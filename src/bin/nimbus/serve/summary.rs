//! The live summary (per function: invocations, errors, throttles, p99) and the final report.

use indicatif::ProgressBar;
use nimbus::serve::{Platform, StopReport};
use nimbus::Runtime;
use std::cell::RefCell;

/// The live summary: a spinner redrawn in place on a terminal, plain lines (only when something
/// changed) otherwise.
pub(crate) struct Live {
    bar: Option<ProgressBar>,
    last: RefCell<String>,
}

impl Live {
    pub(crate) fn new(terminal: bool) -> Self {
        Self {
            bar: terminal.then(ProgressBar::new_spinner),
            last: RefCell::new(String::new()),
        }
    }

    pub(crate) fn show(&self, platform: &Platform) {
        let lines: Vec<String> = platform
            .functions()
            .iter()
            .map(|name| function_line(platform.runtime(), name))
            .collect();
        let text = lines.join("\n");
        match &self.bar {
            Some(bar) => bar.set_message(text),
            None => {
                if *self.last.borrow() != text {
                    for line in &lines {
                        println!("{line}");
                    }
                    *self.last.borrow_mut() = text;
                }
            }
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn function_line(runtime: &Runtime, name: &str) -> String {
    let Some(m) = runtime.metrics(name) else {
        return format!("{name}: gone");
    };
    let mut line = format!(
        "{name}: {} invocations, {} errors, {} throttles, p99 {:.1} ms",
        m.invocations,
        m.errors + m.timeouts + m.panics + m.init_failures,
        m.throttles(),
        m.p99.as_secs_f64() * 1e3
    );
    if let Some(a) = runtime.async_metrics(name).filter(|a| a.accepted > 0) {
        line.push_str(&format!(
            "; async {} accepted, {} pending",
            a.accepted, a.pending
        ));
    }
    line
}

/// What happened, and what could not be finished: async events handed back unfinished, events
/// that finished but were kept for the host, deliveries refused, messages left in in-memory
/// queues. For each function, `succeeded + failed + unfinished == accepted`: a kept failure is
/// counted once, in `failed`.
pub(crate) fn final_report(runtime: &Runtime, functions: &[String], report: &StopReport) {
    // Handed back: unfinished (queued, waiting for a retry, stopped mid-run: no condition), or
    // finished and kept (a failure no destination took, a record cut off: a condition).
    let (kept, unfinished): (Vec<_>, Vec<_>) = report
        .shutdown
        .handed_back
        .iter()
        .partition(|event| event.condition.is_some());
    let count = |events: &[&nimbus::HandedBack], name: &str| {
        events.iter().filter(|e| e.function == name).count()
    };
    println!("final summary");
    for name in functions {
        println!("  {}", function_line(runtime, name));
        if let Some(a) = runtime.async_metrics(name).filter(|a| a.accepted > 0) {
            println!(
                "  {name} async: accepted {}, succeeded {}, failed {}, unfinished {}, delivered {}, \
                 delivery failures {}, discarded {}, kept {}",
                a.accepted,
                a.succeeded,
                a.failed,
                count(&unfinished, name),
                a.delivered,
                a.delivery_failures,
                a.discarded,
                count(&kept, name),
            );
        }
    }
    for (name, m) in &report.mappings {
        let stop = report.shutdown.attachments.iter().find(|a| &a.name == name);
        let how = match stop {
            Some(s) if s.clean => "stopped cleanly".to_owned(),
            Some(s) => format!("stopped: {}", s.error.as_deref().unwrap_or("not clean")),
            None => "stopped".to_owned(),
        };
        println!(
            "  mapping {name}: received {}, deleted {}, failed {}, released {} ({how})",
            m.received, m.deleted, m.failed, m.released
        );
    }
    for (name, left) in &report.left_in_queues {
        println!("  queue {name}: {left} messages left (in memory: gone when this process exits)");
    }
    println!(
        "handed back: {} async events accepted but not finished",
        unfinished.len()
    );
    for event in &unfinished {
        println!(
            "  {} {} (queued, {} attempts)",
            event.function, event.request_id, event.attempts
        );
    }
    println!(
        "kept: {} async events finished but taken by no destination (failed without on_failure, \
         or their record cut off)",
        kept.len()
    );
    for event in &kept {
        let error = event
            .error
            .as_ref()
            .map_or_else(String::new, |e| format!(": {} {}", e.error_type, e.message));
        println!(
            "  {} {} ({:?}, {} attempts{error})",
            event.function,
            event.request_id,
            event
                .condition
                .as_ref()
                .map(|c| format!("{c:?}"))
                .unwrap_or_default(),
            event.attempts
        );
    }
    println!(
        "stopped: {} invocations were in flight, {} finished, {} cancelled",
        report.shutdown.in_flight, report.shutdown.finished, report.shutdown.cancelled
    );
}
