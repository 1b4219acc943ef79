//! Figures, tables and the targets they are held to.

use std::time::Duration;

/// The value at fraction `p` of an ascending, non-empty slice.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// The middle value; the upper of the two middles for an even count.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The middle duration, as [`median`].
pub fn median_duration(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

/// A duration in whole microseconds, or with two decimals below 10 µs.
pub fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 10.0 {
        format!("{us:.2} µs")
    } else {
        format!("{us:.0} µs")
    }
}

/// A duration in milliseconds to a tenth, e.g. `142.3 ms`.
pub fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// A rate or count without decimals.
pub fn whole(value: f64) -> String {
    format!("{value:.0}")
}

/// Below this, /proc's 10 ms CPU ticks make a CPU figure too coarse to show.
pub const CPU_MEANINGFUL: Duration = Duration::from_millis(500);

/// CPU time over elapsed time (1.0 is one core kept busy), if the run was
/// long enough for /proc's ticks.
pub fn share(cpu: Duration, elapsed: Duration) -> Option<f64> {
    (elapsed >= CPU_MEANINGFUL).then(|| cpu.as_secs_f64() / elapsed.as_secs_f64())
}

/// The median of shares, if every round had one.
pub fn median_share(shares: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let shares: Option<Vec<f64>> = shares.collect();
    shares.map(|s| median(&s))
}

/// A share as a percentage, e.g. `87%`.
pub fn percent(share: f64) -> String {
    format!("{:.0}%", 100.0 * share)
}

/// `berth / baseline` as a factor, e.g. `0.93x`.
pub fn ratio(berth: f64, baseline: f64) -> String {
    format!("{:.2}x", berth / baseline)
}

/// The same, for durations.
pub fn ratio_of(berth: Duration, baseline: Duration) -> String {
    ratio(berth.as_secs_f64(), baseline.as_secs_f64())
}

/// A plain-text table: a name column, a round column, then right-aligned figures.
pub struct Table {
    widths: Vec<usize>,
}

const NAME_WIDTH: usize = 36;

impl Table {
    /// Prints the header line and remembers each column's width.
    pub fn new(columns: &[&str]) -> Table {
        let widths: Vec<usize> = columns.iter().map(|c| c.chars().count().max(9)).collect();
        let mut line = format!("{:<NAME_WIDTH$} {:>5}", "server", "round");
        for (column, width) in columns.iter().zip(&widths) {
            line.push_str(&format!("  {column:>width$}"));
        }
        println!("{line}");
        Table { widths }
    }

    /// Prints one line: `name`, `round` (may be empty), then one cell per column.
    pub fn row(&self, name: &str, round: &str, cells: &[String]) {
        let mut line = format!("{name:<NAME_WIDTH$} {round:>5}");
        for (cell, width) in cells.iter().zip(&self.widths) {
            line.push_str(&format!("  {cell:>width$}"));
        }
        println!("{}", line.trim_end());
    }
}

/// What one figure is held to.
#[derive(Clone, Copy)]
pub enum Goal {
    /// berth's figure over the baseline's must be at least this.
    RatioAtLeast(f64),
    /// berth's figure over the baseline's must be at most this.
    RatioAtMost(f64),
    /// berth's own figure must be at least this.
    AtLeast(f64),
    /// berth's own figure must be at most this.
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::RatioAtLeast(bound) | Goal::AtLeast(bound) => value >= bound,
            Goal::RatioAtMost(bound) | Goal::AtMost(bound) => value <= bound,
        }
    }

    fn show(self, value: f64, unit: &str) -> (String, String) {
        let amount = |v: f64| {
            if v.abs() < 100.0 {
                format!("{v:.1} {unit}")
            } else {
                format!("{v:.0} {unit}")
            }
        };
        match self {
            Goal::RatioAtLeast(bound) => (format!("{value:.2}x"), format!(">= {bound:.2}x")),
            Goal::RatioAtMost(bound) => (format!("{value:.2}x"), format!("<= {bound:.2}x")),
            Goal::AtLeast(bound) => (amount(value), format!(">= {}", amount(bound))),
            Goal::AtMost(bound) => (amount(value), format!("<= {}", amount(bound))),
        }
    }
}

struct Row {
    what: String,
    measured: String,
    target: String,
    met: bool,
}

/// Every target checked during the run, for the closing summary.
pub struct Summary {
    rows: Vec<Row>,
    smoke: bool,
}

impl Summary {
    /// An empty summary; a smoke run's figures are marked as not meaningful.
    pub fn new(smoke: bool) -> Summary {
        Summary {
            rows: Vec::new(),
            smoke,
        }
    }

    /// Holds `value` to `goal`, records the outcome and returns it as text
    /// for the scenario's own table, e.g. `rate 0.95x (target >= 0.90x): met`.
    pub fn check(
        &mut self,
        what: &str,
        figure: &str,
        value: f64,
        goal: Goal,
        unit: &str,
    ) -> String {
        let (measured, target) = goal.show(value, unit);
        // NaN (no measurement) never meets a target.
        let met = goal.met(value);
        let text = format!(
            "{figure} {measured} (target {target}): {}",
            if met { "met" } else { "NOT met" }
        );
        self.rows.push(Row {
            what: format!("{what}: {figure}"),
            measured,
            target,
            met,
        });
        text
    }

    /// Prints the table of every target checked.
    pub fn print(&self) {
        println!();
        println!(
            "summary of targets{}",
            if self.smoke {
                " (smoke run: tiny counts, the figures mean nothing)"
            } else {
                ""
            }
        );
        let width = self
            .rows
            .iter()
            .map(|r| r.what.chars().count())
            .max()
            .unwrap_or(0);
        println!(
            "{:<width$}  {:>14}  {:>16}  result",
            "figure", "measured", "target"
        );
        for row in &self.rows {
            println!(
                "{:<width$}  {:>14}  {:>16}  {}",
                row.what,
                row.measured,
                row.target,
                if row.met { "met" } else { "NOT met" }
            );
        }
        let met = self.rows.iter().filter(|r| r.met).count();
        println!("{met} of {} targets met", self.rows.len());
    }
}
