//! Percentiles, the results tables (Markdown, ready for docs/BENCHMARKS.md) and the
//! targets of issue 4.

use std::time::Duration;

use crate::load::Phase;

/// Latency percentiles (nearest rank).
#[derive(Debug, Clone, Copy, Default)]
pub struct Stats {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
}

impl Stats {
    /// Percentiles of `samples`.
    pub fn of(samples: &[Duration]) -> Stats {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |p: f64| -> Duration {
            if s.is_empty() {
                return Duration::ZERO;
            }
            let rank = (p * s.len() as f64).ceil() as usize;
            s[rank.clamp(1, s.len()) - 1]
        };
        Stats {
            p50: at(0.50),
            p99: at(0.99),
        }
    }
}

/// One throughput run: N clients over one transport, allocating then releasing.
#[derive(Debug, Clone)]
pub struct Run {
    /// `tcp` or `unix`.
    pub transport: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// The allocation phase.
    pub alloc: Phase,
    /// The release phase.
    pub release: Phase,
    /// Mean mutations per group commit during the allocation phase.
    pub batch: f64,
    /// Mean time of one commit (transaction + fsync) during the allocation phase.
    pub commit: Duration,
    /// kipamd's CPU time per allocation during the allocation phase.
    pub cpu_per_alloc: Duration,
    /// The clients' (this process's) CPU time per allocation.
    pub client_cpu_per_alloc: Duration,
    /// Share of the machine's CPU time kipamd and the clients used together.
    pub busy: f64,
    /// Every 2 s of the allocation phase: allocations per second, kipamd CPU per allocation.
    pub timeline: Vec<(f64, Duration)>,
}

/// The 1M-allocation part.
#[derive(Debug, Clone, Default)]
pub struct Large {
    /// Allocations held.
    pub held: u64,
    /// Written into the store without kipamd (`--fill-mode offline`).
    pub offline: bool,
    /// How they were put there (rate of the fill).
    pub fill: Phase,
    /// Resident memory after a fill through the API, and its peak.
    pub rss_filled: Option<(u64, u64)>,
    /// Resident memory after a restart (state loaded from the store), and its peak.
    pub rss_restarted: (u64, u64),
    /// From spawning kipamd to `/readyz` answering 200.
    pub ready: Duration,
    /// Of which: from spawning to listening.
    pub listening: Duration,
    /// The SQLite file with its WAL, bytes.
    pub store_bytes: u64,
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Decimal megabytes, as the target is stated.
fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// Prints the tables and the targets to stdout.
pub fn print(runs: &[Run], large: Option<&Large>, duration: Duration) {
    println!(
        "Throughput: each run allocates for {:.0} s (one handle per request, one address from \
         pool `bench` 10.0.0.0/8, clients spread over 64 nodes), then releases everything it \
         allocated. Every answer is durable (group commit; kipamd answers after the WAL \
         holding the request is fsynced). Each \
         client keeps one HTTP/1.1 connection alive across its requests.\n",
        duration.as_secs_f64()
    );
    println!(
        "| transport | clients | allocations | alloc/s | alloc p50 | alloc p99 | release/s | release p50 | release p99 | mean batch | mean commit | kipamd CPU / alloc | client CPU / alloc | CPU used by both |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in runs {
        let a = Stats::of(&r.alloc.latencies);
        let d = Stats::of(&r.release.latencies);
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {:.0} | {} | {} | {:.1} | {} | {:.0} µs | {:.0} µs | {:.0}% |",
            r.transport,
            r.clients,
            r.alloc.ok,
            r.alloc.rate(),
            ms(a.p50),
            ms(a.p99),
            r.release.rate(),
            ms(d.p50),
            ms(d.p99),
            r.batch,
            ms(r.commit),
            r.cpu_per_alloc.as_secs_f64() * 1e6,
            r.client_cpu_per_alloc.as_secs_f64() * 1e6,
            r.busy * 100.0,
        );
    }
    println!();
    if runs.iter().any(|r| r.timeline.len() >= 3) {
        println!(
            "Over time: allocations per second and kipamd CPU per allocation, every {} s of \
             the allocation phase.\n",
            crate::SAMPLE_EVERY.as_secs_f64()
        );
        println!("| transport | clients | alloc/s (kipamd CPU / alloc) |");
        println!("|---|---:|---|");
        for r in runs.iter().filter(|r| r.timeline.len() >= 3) {
            let cells: Vec<String> = r
                .timeline
                .iter()
                .map(|(rate, cpu)| format!("{rate:.0} ({:.0} µs)", cpu.as_secs_f64() * 1e6))
                .collect();
            println!("| {} | {} | {} |", r.transport, r.clients, cells.join(", "));
        }
        println!();
    }
    if let Some(l) = large {
        println!("| {} allocations held | value |", l.held);
        println!("|---|---:|");
        let how = if l.offline {
            "fill offline (IpamStore, no kipamd, no history records)"
        } else {
            "fill through the API (64 clients, unix socket)"
        };
        println!(
            "| {how} | {:.0} alloc/s, {:.1} s |",
            l.fill.rate(),
            l.fill.wall.as_secs_f64()
        );
        if let Some((rss, peak)) = l.rss_filled {
            println!(
                "| kipamd RSS after the fill (peak) | {} ({}) |",
                mb(rss),
                mb(peak)
            );
        }
        println!(
            "| kipamd RSS after a restart (peak while loading) | {} ({}) |",
            mb(l.rss_restarted.0),
            mb(l.rss_restarted.1)
        );
        println!("| restart: spawn to listening | {} |", ms(l.listening));
        println!("| restart: spawn to /readyz 200 | {} |", ms(l.ready));
        println!("| store on disk (kipam.db + WAL) | {} |", mb(l.store_bytes));
        println!();
    }
    println!("| target (issue 4) | measured | |");
    println!("|---|---|---|");
    for r in runs.iter().filter(|r| r.clients == 64) {
        let a = Stats::of(&r.alloc.latencies);
        println!(
            "| >= 20,000 durable alloc/s, 64 clients, {} | {:.0} /s | {} |",
            r.transport,
            r.alloc.rate(),
            met(r.alloc.rate() >= 20_000.0)
        );
        println!(
            "| p99 < 10 ms, 64 clients, {} | {} | {} |",
            r.transport,
            ms(a.p99),
            met(a.p99 < Duration::from_millis(10))
        );
    }
    if let Some(l) = large {
        let rss = l.rss_filled.map_or(0, |r| r.0).max(l.rss_restarted.0);
        println!(
            "| RSS <= 300 MB at {} allocations | {} | {} |",
            l.held,
            mb(rss),
            met(rss <= 300_000_000)
        );
        println!(
            "| ready <= 3 s after restart | {} | {} |",
            ms(l.ready),
            met(l.ready <= Duration::from_secs(3))
        );
    }
}
