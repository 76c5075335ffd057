//! The live summary (per function: invocations, errors, throttles, p99) and the final report.

use std::collections::HashMap;

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
        "{name}: {} invocations, {} errors, {} throttles, p99 {:?}",
        m.invocations,
        m.errors + m.timeouts + m.panics + m.init_failures,
        m.throttles(),
        m.p99
    );
    if let Some(a) = runtime.async_metrics(name).filter(|a| a.accepted > 0) {
        line.push_str(&format!(
            "; async {} accepted, {} pending",
            a.accepted, a.pending
        ));
    }
    line
}

/// What happened, and what could not be finished: async events handed back, messages left
/// in in-memory queues.
pub(crate) fn final_report(runtime: &Runtime, functions: &[String], report: &StopReport) {
    let mut handed_back: HashMap<&str, usize> = HashMap::new();
    for event in &report.shutdown.handed_back {
        *handed_back.entry(event.function.as_str()).or_default() += 1;
    }
    println!("final summary");
    for name in functions {
        println!("  {}", function_line(runtime, name));
        if let Some(a) = runtime.async_metrics(name).filter(|a| a.accepted > 0) {
            println!(
                "  {name} async: accepted {}, succeeded {}, failed {}, delivered {}, handed back {}",
                a.accepted,
                a.succeeded,
                a.failed,
                a.delivered,
                handed_back.get(name.as_str()).copied().unwrap_or(0)
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
        report.shutdown.handed_back.len()
    );
    for event in &report.shutdown.handed_back {
        let condition = event
            .condition
            .as_ref()
            .map_or_else(|| "queued".to_owned(), |c| format!("{c:?}"));
        println!(
            "  {} {} ({condition}, {} attempts)",
            event.function, event.request_id, event.attempts
        );
    }
    println!(
        "stopped: {} invocations were in flight, {} finished, {} cancelled",
        report.shutdown.in_flight, report.shutdown.finished, report.shutdown.cancelled
    );
}
