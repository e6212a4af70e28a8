//! Printing: the machine line and one table per workload, with each
//! target's figure and its ratio to the native reference (the table's
//! first row, 1.00) and, where given, to a second baseline (nginx).

use std::fmt::Write as _;
use std::thread;

use crate::targets::Placement;

/// Prints what the figures were measured on.
pub fn machine(placement: &Placement) {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "machine: nproc {nproc}, {model}, Linux {}; load average {}",
        kernel.trim(),
        load.join(" ")
    );
    println!("{}", placement.describe());
    println!();
}

/// A row's figure, or why there is none.
enum Figure {
    Value(f64),
    Failed(String),
}

struct Row {
    target: String,
    figure: Figure,
    extras: Vec<String>,
}

/// One workload's table.
pub struct Table {
    title: String,
    unit: String,
    extras: Vec<String>,
    baseline: Option<(String, f64)>,
    /// Whether the ratio to the first row is printed.
    ratio: bool,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Table {
    /// A table whose figures are in `unit`, with extra columns `extras`.
    pub fn new(title: &str, unit: &str, extras: &[&str]) -> Table {
        Table {
            title: title.to_string(),
            unit: unit.to_string(),
            extras: extras.iter().map(|e| e.to_string()).collect(),
            baseline: None,
            ratio: true,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Adds a second ratio column: figures divided by `value` (`name`'s).
    pub fn baseline(&mut self, name: &str, value: f64) {
        self.baseline = Some((name.to_string(), value));
    }

    /// Leaves out the ratio to the first row (a table without a
    /// reference, whose figures are judged against a target).
    pub fn hide_ratio(&mut self) {
        self.ratio = false;
    }

    /// Adds a measured row; the first row is the reference.
    pub fn row(&mut self, target: &str, value: f64, extras: Vec<String>) {
        self.rows.push(Row {
            target: target.to_string(),
            figure: Figure::Value(value),
            extras,
        });
    }

    /// Adds a row for a target that could not be measured.
    pub fn failed(&mut self, target: &str, error: &anyhow::Error) {
        self.rows.push(Row {
            target: target.to_string(),
            figure: Figure::Failed(format!("{error:#}").replace('\n', " / ")),
            extras: Vec::new(),
        });
    }

    /// Adds a line printed under the table.
    pub fn note(&mut self, line: impl Into<String>) {
        self.notes.push(line.into());
    }

    /// Prints the table.
    pub fn print(&self) {
        println!("{} ({})", self.title, self.unit);
        let mut header = format!("  {:<38} {:>12}", "target", "figure");
        if self.ratio {
            let _ = write!(header, " {:>7}", "ratio");
        }
        if let Some((name, _)) = &self.baseline {
            let _ = write!(header, " {:>9}", format!("vs {name}"));
        }
        for extra in &self.extras {
            let _ = write!(header, " {extra:>10}");
        }
        println!("{header}");
        let reference = match self.rows.first().map(|r| &r.figure) {
            Some(Figure::Value(v)) if *v > 0.0 => Some(*v),
            _ => None,
        };
        for row in &self.rows {
            let mut line = format!("  {:<38}", row.target);
            match &row.figure {
                Figure::Value(value) => {
                    let _ = write!(line, " {:>12}", format_figure(*value));
                    if self.ratio {
                        let _ = write!(line, " {:>7}", ratio(Some(*value), reference));
                    }
                    if let Some((_, base)) = &self.baseline {
                        let _ = write!(line, " {:>9}", ratio(Some(*value), Some(*base)));
                    }
                    for extra in &row.extras {
                        let _ = write!(line, " {extra:>10}");
                    }
                }
                Figure::Failed(why) => {
                    let _ = write!(line, " failed: {why}");
                }
            }
            println!("{line}");
        }
        for note in &self.notes {
            println!("  {note}");
        }
        println!();
    }
}

fn ratio(value: Option<f64>, base: Option<f64>) -> String {
    match (value, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}", v / b),
        _ => "-".to_string(),
    }
}

/// Whole numbers for large figures, one decimal for small ones.
fn format_figure(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

/// A microsecond figure for an extra column.
pub fn micros(us: f64) -> String {
    format!("{us:.1}")
}
