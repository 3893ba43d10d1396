//! Output: aligned tables, utilization bars and numbers for people; JSON for scripts.
//!
//! Everything here builds strings, so formatting is unit-tested without a terminal;
//! [`Out`] writes them to stdout and treats a closed pipe (`kipamctl pool list | head`)
//! as the reader having seen enough, not as an error or a panic. JSON output is the API's
//! own types serialized as they are, so `-o json` is as stable as the API.

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use crate::error::CliError;

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned tables for people.
    #[default]
    Table,
    /// JSON (the API's types, pretty-printed) for scripts.
    Json,
}

/// Writes to stdout; a closed pipe ends the output quietly.
pub struct Out {
    format: Format,
}

impl Out {
    /// Output in `format`.
    pub fn new(format: Format) -> Out {
        Out { format }
    }

    /// Whether JSON was asked for.
    pub fn json(&self) -> bool {
        self.format == Format::Json
    }

    /// Writes text as it is (a newline is added when missing).
    pub fn text(&self, s: &str) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        let r = out.write_all(s.as_bytes()).and_then(|()| {
            if s.ends_with('\n') || s.is_empty() {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        });
        match r.and_then(|()| out.flush()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            r => r.map_err(CliError::Output),
        }
    }

    /// Writes `v` as pretty JSON.
    pub fn value<T: Serialize + ?Sized>(&self, v: &T) -> Result<(), CliError> {
        let s = serde_json::to_string_pretty(v)
            .map_err(|e| CliError::Output(std::io::Error::other(e)))?;
        self.text(&s)
    }

    /// JSON of `v` when JSON was asked for, else the table `human()` builds.
    pub fn either<T: Serialize + ?Sized>(
        &self,
        v: &T,
        human: impl FnOnce() -> String,
    ) -> Result<(), CliError> {
        if self.json() {
            self.value(v)
        } else {
            self.text(&human())
        }
    }
}

/// A table with a header row; columns are as wide as their widest cell.
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Rows added so far (the header not counted).
    pub fn len(&self) -> usize {
        self.rows.len() - 1
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The table, columns separated by two spaces, trailing spaces trimmed.
    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in &self.rows {
            for (i, c) in r.iter().enumerate() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in &self.rows {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                line.push_str(c);
                if i + 1 < r.len() {
                    let pad = widths[i] - c.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A utilization bar of `width` cells: `[######..............]`. Out-of-range and NaN
/// percentages are clamped.
pub fn bar(pct: f64, width: usize) -> String {
    let pct = if pct.is_nan() {
        0.0
    } else {
        pct.clamp(0.0, 100.0)
    };
    let filled = ((pct / 100.0) * width as f64).round() as usize;
    // Any use shows at least one cell, so a nearly empty pool is not drawn as unused.
    let filled = if pct > 0.0 { filled.max(1) } else { filled }.min(width);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// A percentage with one decimal: `84.2%`.
pub fn pct(p: f64) -> String {
    format!("{p:.1}%")
}

/// A decimal number (a string, as the API sends large counts) with thousands separators:
/// `65536` → `65,536`. Anything that is not all digits is returned as it is.
pub fn group(n: &str) -> String {
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return n.to_string();
    }
    let mut out = String::with_capacity(n.len() + n.len() / 3);
    for (i, c) in n.chars().enumerate() {
        if i > 0 && (n.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// [`group`] of a number.
pub fn group_u64(n: u64) -> String {
    group(&n.to_string())
}

/// The wire name of an enum value (`not-growing`, `held`), as the API writes it.
pub fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// An optional value, or `-`.
pub fn or_dash(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let mut t = Table::new(&["NAME", "CIDR"]);
        t.row(vec!["pods".into(), "10.244.0.0/16".into()]);
        t.row(vec!["a-much-longer-name".into(), "fd00::/64".into()]);
        assert_eq!(
            t.render(),
            "NAME                CIDR\npods                10.244.0.0/16\na-much-longer-name  fd00::/64\n"
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn bars_are_clamped_and_honest() {
        assert_eq!(bar(0.0, 10), "[..........]");
        assert_eq!(bar(50.0, 10), "[#####.....]");
        assert_eq!(bar(100.0, 10), "[##########]");
        assert_eq!(bar(0.01, 10), "[#.........]");
        assert_eq!(bar(250.0, 4), "[####]");
        assert_eq!(bar(f64::NAN, 4), "[....]");
        assert_eq!(bar(-3.0, 4), "[....]");
    }

    #[test]
    fn numbers_group() {
        assert_eq!(group("0"), "0");
        assert_eq!(group("999"), "999");
        assert_eq!(group("1000"), "1,000");
        assert_eq!(group("65536"), "65,536");
        assert_eq!(group("18446744073709551616"), "18,446,744,073,709,551,616");
        assert_eq!(group("n/a"), "n/a");
        assert_eq!(group_u64(28_160), "28,160");
        assert_eq!(pct(84.25), "84.2%");
        assert_eq!(or_dash(None::<u8>), "-");
    }
}
