//! Percentiles, the results table (Markdown, ready for docs/BENCHMARKS.md), the
//! host-local/kipam ratios and the targets of issue 3.

use std::time::Duration;

use crate::Options;

/// Latency percentiles of one batch of calls.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Calls measured.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile (nearest rank: with fewer than 100 calls, the slowest).
    pub p99: Duration,
}

impl Stats {
    /// Percentiles of `samples` (nearest-rank method).
    pub fn of(mut samples: Vec<Duration>) -> Stats {
        samples.sort_unstable();
        let at = |p: f64| -> Duration {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let rank = (p * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Stats {
            n: samples.len(),
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    scenario: String,
    mode: &'static str,
    plugin: &'static str,
    add: Stats,
    del: Option<Stats>,
}

impl Row {
    /// A row; `del` is `None` for the `/bin/true` baseline.
    pub fn new(
        scenario: String,
        mode: &'static str,
        plugin: &'static str,
        add: Stats,
        del: Option<Stats>,
    ) -> Row {
        Row {
            scenario,
            mode,
            plugin,
            add,
            del,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(1e-9)
}

/// Prints everything to stdout.
pub fn print(o: &Options, rows: &[Row], baseline: &[Row]) {
    println!(
        "kipam vs host-local, one exec per call; subnet {}, cniVersion 1.0.0, kipam with its \
         default config (reuseDelaySeconds 30, SQLite synchronous=FULL); sequential: {} calls; \
         parallel: {} callers x {} calls (host-local with >= {} allocated: {} and {} x {}).\n",
        o.subnet,
        o.iterations,
        o.threads,
        o.per_thread,
        o.large_from,
        o.large_iterations,
        o.threads,
        o.large_per_thread
    );
    println!("| scenario | plugin | calls | ADD p50 | ADD p99 | DEL p50 | DEL p99 |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rows.iter().chain(baseline) {
        let (d50, d99) = r
            .del
            .map_or(("".into(), "".into()), |d| (ms(d.p50), ms(d.p99)));
        println!(
            "| {}, {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            r.mode,
            r.plugin,
            r.add.n,
            ms(r.add.p50),
            ms(r.add.p99),
            d50,
            d99
        );
    }

    println!("\nhost-local / kipam (higher: kipam faster)\n");
    println!("| scenario | ADD p50 | ADD p99 | DEL p50 | DEL p99 |");
    println!("|---|---:|---:|---:|---:|");
    for k in rows.iter().filter(|r| r.plugin == "kipam") {
        let Some(h) = find(rows, &k.scenario, k.mode, "host-local") else {
            continue;
        };
        let (Some(kd), Some(hd)) = (k.del, h.del) else {
            continue;
        };
        println!(
            "| {}, {} | {:.1}x | {:.1}x | {:.1}x | {:.1}x |",
            k.scenario,
            k.mode,
            ratio(h.add.p50, k.add.p50),
            ratio(h.add.p99, k.add.p99),
            ratio(hd.p50, kd.p50),
            ratio(hd.p99, kd.p99)
        );
    }

    println!("\nTargets (issue 3; ADD p50):\n");
    for mode in ["sequential", "parallel"] {
        for (allocated, want) in [(0, 3.0), (1_000, 10.0)] {
            let scenario = format!("{allocated} allocated");
            let label = format!(
                "kipam ADD p50 >= {want}x faster than host-local at {allocated} allocated, {mode}"
            );
            match (
                find(rows, &scenario, mode, "kipam"),
                find(rows, &scenario, mode, "host-local"),
            ) {
                (Some(k), Some(h)) => {
                    let got = ratio(h.add.p50, k.add.p50);
                    verdict(
                        &label,
                        got >= want,
                        &format!("{} / {} = {got:.1}x", ms(h.add.p50), ms(k.add.p50)),
                    );
                }
                _ => println!("- [not measured] {label}"),
            }
        }
        let label = format!("kipam ADD p50 at 60000 allocated <= 1.5x its own at 0, {mode}");
        match (
            find(rows, "60000 allocated", mode, "kipam"),
            find(rows, "0 allocated", mode, "kipam"),
        ) {
            (Some(big), Some(empty)) => {
                let got = ratio(big.add.p50, empty.add.p50);
                verdict(
                    &label,
                    got <= 1.5,
                    &format!("{} / {} = {got:.2}x", ms(big.add.p50), ms(empty.add.p50)),
                );
            }
            _ => println!("- [not measured] {label}"),
        }
    }
}

fn verdict(label: &str, met: bool, detail: &str) {
    let word = if met { "met" } else { "MISSED" };
    println!("- [{word}] {label}: {detail}");
}

fn find<'a>(rows: &'a [Row], scenario: &str, mode: &str, plugin: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.mode == mode && r.plugin == plugin)
}
