//! The harness's arithmetic: percentiles, Little's law, ratios, autoscale analysis, and the
//! result row that every scenario produces.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// One result line: one system measured in one scenario.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) system: String,
    pub(crate) events: u64,
    pub(crate) seconds: f64,
    pub(crate) events_per_sec: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p50_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p99_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) p999_us: Option<f64>,
    /// nimbus's events/s divided by this system's (how many times faster nimbus is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) nimbus_speedup: Option<f64>,
    /// Scenario-specific figures (autoscale timings, idle CPU and memory, ...).
    #[serde(flatten)]
    pub(crate) extra: BTreeMap<String, serde_json::Value>,
    /// Events arrived at a set rate (open loop): events/s is that rate, not a capacity, so
    /// no speedup is computed.
    #[serde(skip)]
    pub(crate) at_set_rate: bool,
}

impl Row {
    pub(crate) fn throughput(scenario: &str, system: &str, events: u64, took: Duration) -> Self {
        let seconds = took.as_secs_f64();
        Self {
            scenario: scenario.to_owned(),
            system: system.to_owned(),
            events,
            seconds,
            events_per_sec: rate(events, took),
            p50_us: None,
            p99_us: None,
            p999_us: None,
            nimbus_speedup: None,
            extra: BTreeMap::new(),
            at_set_rate: false,
        }
    }

    /// Marks an open-loop row: no speedup is computed for it.
    pub(crate) fn at_set_rate(mut self) -> Self {
        self.at_set_rate = true;
        self
    }

    /// A system measured once per repetition on `events` events each (`took` holds the wall
    /// times): the median rate, with the repetitions and the slowest and fastest rates.
    pub(crate) fn repeated(scenario: &str, system: &str, events: u64, took: &[Duration]) -> Self {
        let rates: Vec<f64> = took.iter().map(|t| rate(events, *t)).collect();
        let seconds: Vec<f64> = took.iter().map(Duration::as_secs_f64).collect();
        let mut row = Self::throughput(scenario, system, events, Duration::ZERO);
        row.seconds = median(&seconds);
        row.events_per_sec = median(&rates);
        row.with("reps", took.len() as u64)
            .with(
                "min_per_sec",
                round1(rates.iter().copied().fold(f64::INFINITY, f64::min)),
            )
            .with(
                "max_per_sec",
                round1(rates.iter().copied().fold(0.0, f64::max)),
            )
    }

    /// p50 / p99 / p99.9 of one histogram of nanoseconds (the HTTP scenario's median round).
    #[cfg(any(test, feature = "http"))]
    pub(crate) fn with_latency(mut self, histogram: &Histogram<u64>) -> Self {
        self.p50_us = Some(percentile_us(histogram, 0.50));
        self.p99_us = Some(percentile_us(histogram, 0.99));
        self.p999_us = Some(percentile_us(histogram, 0.999));
        self
    }

    pub(crate) fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }
}

/// Events per second (0 for an empty interval).
pub(crate) fn rate(events: u64, took: Duration) -> f64 {
    let seconds = took.as_secs_f64();
    if seconds > 0.0 {
        events as f64 / seconds
    } else {
        0.0
    }
}

/// The value at quantile `q` of a histogram of nanoseconds, in microseconds.
pub(crate) fn percentile_us(histogram: &Histogram<u64>, q: f64) -> f64 {
    histogram.value_at_quantile(q) as f64 / 1_000.0
}

/// Little's law: the mean number in the system is arrival rate × time in the system.
pub(crate) fn littles_law(rate_per_sec: f64, time_in_system: Duration) -> f64 {
    rate_per_sec * time_in_system.as_secs_f64()
}

/// How many times faster `nimbus` is than `other` (events/s over events/s).
pub(crate) fn speedup(nimbus: f64, other: f64) -> Option<f64> {
    (other > 0.0 && nimbus > 0.0).then(|| nimbus / other)
}

/// Fills in every row's speedup against the `nimbus` row of the same scenario, from the rows'
/// events/s (the medians of their repetitions), except in open-loop rows.
pub(crate) fn attach_speedups(rows: &mut [Row]) {
    let nimbus: BTreeMap<String, f64> = rows
        .iter()
        .filter(|r| r.system == "nimbus")
        .map(|r| (r.scenario.clone(), r.events_per_sec))
        .collect();
    for row in rows.iter_mut() {
        if let (Some(&n), false) = (nimbus.get(&row.scenario), row.at_set_rate) {
            row.nimbus_speedup = speedup(n, row.events_per_sec);
        }
    }
}

/// What a concurrency curve says about scaling to a target: when it first came within 10 %
/// of the target, and how far above the target it went.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScalingFit {
    pub(crate) reached_after: Option<Duration>,
    pub(crate) overshoot: f64,
    pub(crate) peak: f64,
}

/// `samples` are (time since the load began, concurrency).
pub(crate) fn scaling_fit(samples: &[(Duration, f64)], target: f64) -> ScalingFit {
    let reached_after = samples
        .iter()
        .find(|(_, c)| *c >= 0.9 * target)
        .map(|(t, _)| *t);
    let peak = samples.iter().map(|(_, c)| *c).fold(0.0, f64::max);
    let overshoot = if target > 0.0 {
        (peak / target - 1.0).max(0.0)
    } else {
        0.0
    };
    ScalingFit {
        reached_after,
        overshoot,
        peak,
    }
}

/// The mean of `samples` (time, value) in consecutive windows of `window` (the first from
/// time zero), each at the time its window starts; empty windows are left out.
pub(crate) fn smoothed(samples: &[(Duration, f64)], window: Duration) -> Vec<(Duration, f64)> {
    let width = window.as_nanos().max(1);
    let mut means: Vec<(Duration, f64)> = Vec::new();
    let mut current: Option<(u128, f64, u32)> = None;
    for (t, value) in samples {
        let index = t.as_nanos() / width;
        match &mut current {
            Some((i, sum, n)) if *i == index => {
                *sum += value;
                *n += 1;
            }
            _ => {
                if let Some((i, sum, n)) = current {
                    means.push((window * i as u32, sum / f64::from(n)));
                }
                current = Some((index, *value, 1));
            }
        }
    }
    if let Some((i, sum, n)) = current {
        means.push((window * i as u32, sum / f64::from(n)));
    }
    means
}

/// `value` rounded to one decimal.
pub(crate) fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// `value` rounded to two decimals.
pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// The median of `values` (NaN when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        for us in 1..=1_000u64 {
            h.record(us * 1_000).unwrap();
        }
        let close = |got: f64, want: f64| {
            assert!((got - want).abs() <= want * 0.001 + 0.5, "{got} vs {want}")
        };
        close(percentile_us(&h, 0.5), 500.0);
        close(percentile_us(&h, 0.99), 990.0);
        close(percentile_us(&h, 0.999), 999.0);
    }

    #[test]
    fn littles_law_and_rates() {
        assert!((littles_law(20_000.0, Duration::from_millis(10)) - 200.0).abs() < 1e-9);
        assert_eq!(rate(1_000, Duration::from_millis(500)), 2_000.0);
        assert_eq!(rate(1_000, Duration::ZERO), 0.0);
        assert_eq!(speedup(4.0, 2.0), Some(2.0));
        assert_eq!(speedup(4.0, 0.0), None);
    }

    #[test]
    fn speedups_are_relative_to_nimbus_in_the_same_scenario() {
        let mut rows = vec![
            Row::throughput("a", "nimbus", 100, Duration::from_secs(1)),
            Row::throughput("a", "peer", 100, Duration::from_secs(4)),
            Row::throughput("b", "peer", 100, Duration::from_secs(1)),
            Row::throughput("a", "open loop", 100, Duration::from_secs(1)).at_set_rate(),
        ];
        attach_speedups(&mut rows);
        assert_eq!(rows[0].nimbus_speedup, Some(1.0));
        assert_eq!(rows[1].nimbus_speedup, Some(4.0));
        assert_eq!(rows[2].nimbus_speedup, None, "no nimbus row in scenario b");
        assert_eq!(rows[3].nimbus_speedup, None, "open loop");
    }

    #[test]
    fn scaling_fit_finds_reach_time_and_overshoot() {
        let ms = Duration::from_millis;
        let samples = [
            (ms(0), 0.0),
            (ms(10), 100.0),
            (ms(20), 185.0),
            (ms(30), 230.0),
            (ms(40), 200.0),
        ];
        let fit = scaling_fit(&samples, 200.0);
        assert_eq!(fit.reached_after, Some(ms(20)));
        assert!((fit.overshoot - 0.15).abs() < 1e-9);
        assert_eq!(fit.peak, 230.0);
        assert_eq!(scaling_fit(&samples[..2], 200.0).reached_after, None);
    }

    #[test]
    fn smoothing_averages_each_window() {
        let ms = Duration::from_millis;
        let samples = [
            (ms(1), 100.0),
            (ms(5), 300.0),
            (ms(21), 200.0),
            (ms(45), 50.0),
            (ms(59), 70.0),
        ];
        assert_eq!(
            smoothed(&samples, ms(20)),
            vec![(ms(0), 200.0), (ms(20), 200.0), (ms(40), 60.0)]
        );
        let fit = scaling_fit(&smoothed(&samples, ms(20)), 180.0);
        assert!((fit.overshoot - 20.0 / 180.0).abs() < 1e-9, "{fit:?}");
        assert!(smoothed(&[], ms(20)).is_empty());
    }

    #[test]
    fn repeated_rows_report_the_median_and_the_spread() {
        let s = Duration::from_secs;
        let row = Row::repeated("a", "nimbus", 100, &[s(1), s(4), s(2)]);
        assert_eq!(row.events_per_sec, 50.0);
        assert_eq!(row.seconds, 2.0);
        assert_eq!(row.extra["reps"], 3);
        assert_eq!(row.extra["min_per_sec"], 25.0);
        assert_eq!(row.extra["max_per_sec"], 100.0);
    }

    #[test]
    fn json_rows_carry_the_documented_fields() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        h.record(2_000).unwrap();
        let row = Row::throughput("latency", "nimbus", 10, Duration::from_millis(5))
            .with_latency(&h)
            .with("rate_per_sec", 1_000.0);
        let value: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&row).unwrap()).unwrap();
        for field in [
            "scenario",
            "system",
            "events",
            "seconds",
            "events_per_sec",
            "p50_us",
            "p99_us",
            "rate_per_sec",
        ] {
            assert!(value.get(field).is_some(), "missing {field} in {value}");
        }
        assert_eq!(value["events_per_sec"], 2_000.0);
        let plain =
            serde_json::to_value(Row::throughput("x", "y", 1, Duration::from_secs(1))).unwrap();
        assert!(
            plain.get("p50_us").is_none(),
            "latency fields only where measured"
        );
    }
}
