//! `kipamd-bench`: kipamd under concurrent load, as a whole system — the real daemon
//! binary, real connections, real fsyncs.
//!
//! 1. Throughput and latency: for each transport (TCP on 127.0.0.1, the unix socket) and
//!    each client count (default 1, 16, 64), N threads allocate for a fixed time, then
//!    release what they allocated. Each request is timed from connect to the last byte of
//!    the answer, and kipamd answers only after the group commit holding it is durable, so
//!    "alloc/s" is durable allocations per second. From kipamd's `/metrics` it also
//!    reports the mean group-commit batch and commit time, and from `/proc` kipamd's CPU
//!    time per allocation: where the time goes.
//! 2. Memory and restart at scale: a fresh kipamd is filled with `--fill` allocations
//!    (default 1,000,000) through the API by 64 concurrent clients, its RSS read from
//!    `/proc/PID/status`; then it is stopped (SIGTERM), started again on the same store,
//!    and timed from spawn to `/readyz` answering 200, and its RSS read again.
//!
//! Client and daemon share the machine's CPUs, as they would on a node. Run it through
//! `bench/kipamd.sh` (release build); `--help` lists options.

mod daemon;
mod load;
mod prefill;
mod report;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kipam_core::PoolConfig;

use crate::daemon::{Daemon, metric};
use crate::load::{Amount, POOL};
use crate::report::{Large, Run};

/// Errors of this program: it only reports them, so one boxed type is enough.
pub type Error = kipam_testkit::BenchError;
/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How often a throughput run's rate and kipamd's CPU are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(2);

const USAGE: &str = "usage: kipamd-bench [options]
  --clients LIST     concurrent clients per run, comma-separated [1,16,64]
  --duration SECS    allocation phase of each throughput run [5]
  --transports LIST  tcp, unix or both [tcp,unix]
  --fill N           allocations held for the memory and restart measurement; 0 skips it [1000000]
  --fill-mode MODE   api: 64 clients allocate through kipamd's unix socket (RSS is read
                     after the fill and after a restart); offline: written into the store
                     directly, without history records (RSS after a restart only) [api]
  --work-dir DIR     data directories go here (use the disk kipamd would) [/var/tmp/kipamd-bench]
  --kipamd PATH      the daemon [next to this program: kipamd]
  --keep             keep the data directories";

/// What to run.
#[derive(Debug, Clone)]
struct Options {
    clients: Vec<usize>,
    duration: Duration,
    transports: Vec<bool>,
    fill: u64,
    offline: bool,
    work_dir: PathBuf,
    kipamd: PathBuf,
    keep: bool,
}

fn main() -> ExitCode {
    kipam_testkit::bench_main("kipamd-bench", USAGE, parse_args, run)
}

fn parse_args(args: &[String]) -> Result<Options> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    let mut o = Options {
        clients: vec![1, 16, 64],
        duration: Duration::from_secs(5),
        transports: vec![false, true],
        fill: 1_000_000,
        offline: false,
        work_dir: PathBuf::from("/var/tmp/kipamd-bench"),
        kipamd: exe.with_file_name("kipamd"),
        keep: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            o.keep = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| -> Result<u64> {
            v.trim()
                .parse::<u64>()
                .map_err(|_| format!("{flag} wants a number, got {v:?}").into())
        };
        match flag.as_str() {
            "--clients" => {
                o.clients = value
                    .split(',')
                    .map(|v| match number(v)? {
                        0 => Err(format!("{flag}: 0 clients").into()),
                        n => Ok(n as usize),
                    })
                    .collect::<Result<_>>()?;
            }
            "--duration" => match number(value)? {
                0 => return Err("--duration must be at least 1 second".into()),
                s => o.duration = Duration::from_secs(s),
            },
            "--transports" => {
                o.transports = value
                    .split(',')
                    .map(|t| match t.trim() {
                        "tcp" => Ok(false),
                        "unix" => Ok(true),
                        other => Err(format!("--transports: unknown {other:?}").into()),
                    })
                    .collect::<Result<_>>()?;
            }
            "--fill" => o.fill = number(value)?,
            "--fill-mode" => {
                o.offline = match value.as_str() {
                    "api" => false,
                    "offline" => true,
                    other => return Err(format!("--fill-mode: unknown {other:?}").into()),
                }
            }
            "--work-dir" => o.work_dir = PathBuf::from(value),
            "--kipamd" => o.kipamd = PathBuf::from(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    // 10.0.0.0/8 in /26 blocks over 64 nodes: room for far more than any run allocates.
    if o.fill > 10_000_000 {
        return Err("--fill: at most 10,000,000 (the pool is a /8)".into());
    }
    Ok(o)
}

fn fresh_dir(o: &Options, name: &str) -> Result<PathBuf> {
    let dir = o.work_dir.join(name);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing {}: {e}", dir.display()).into()),
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    Ok(dir)
}

fn create_pool(d: &Daemon) -> Result<()> {
    let cidr = "10.0.0.0/8".parse().map_err(|e| format!("{e}"))?;
    d.client(false)
        .create_pool(&PoolConfig::new(POOL, cidr))
        .map_err(|e| format!("creating pool {POOL}: {e}"))?;
    Ok(())
}

fn run(o: &Options) -> Result<()> {
    if !o.kipamd.is_file() {
        return Err(format!("kipamd not found at {}", o.kipamd.display()).into());
    }
    let mut runs = Vec::new();
    let dir = fresh_dir(o, "throughput")?;
    let d = Daemon::start(&o.kipamd, &dir)?;
    d.wait_ready(Duration::from_secs(60))?;
    create_pool(&d)?;
    // Warm-up (not reported): the first blocks claimed, the page cache warm.
    let warm: Vec<_> = (0..16).map(|_| d.client(true)).collect();
    let (_, handles) = load::allocate(&warm, "warm", Amount::For(Duration::from_secs(1)), None)?;
    load::release(&warm, &handles)?;
    for &unix in &o.transports {
        for &n in &o.clients {
            let transport = if unix { "unix" } else { "tcp" };
            eprintln!("{transport}, {n} clients ...");
            let clients: Vec<_> = (0..n).map(|_| d.client(unix)).collect();
            let m0 = d.metrics()?;
            let cpu0 = d.cpu()?;
            let own0 = daemon::cpu_of("/proc/self/stat")?;
            let tag = format!("{transport}{n}");
            let progress = AtomicU64::new(0);
            let done = AtomicBool::new(false);
            let (alloc, handles, timeline) = std::thread::scope(|s| {
                let sampler = s.spawn(|| sample(d.pid(), &progress, &done));
                let out = load::allocate(&clients, &tag, Amount::For(o.duration), Some(&progress));
                done.store(true, Ordering::Relaxed);
                let timeline = sampler.join().unwrap_or_default();
                out.map(|(alloc, handles)| (alloc, handles, timeline))
            })?;
            let cpu = d.cpu()?.saturating_sub(cpu0);
            let own = daemon::cpu_of("/proc/self/stat")?.saturating_sub(own0);
            let m1 = d.metrics()?;
            let release = load::release(&clients, &handles)?;
            let delta = |name: &str| metric(&m1, name) - metric(&m0, name);
            let batches = delta("kipam_commit_batch_size_count").max(1.0);
            let commits = delta("kipam_store_commit_duration_seconds_count").max(1.0);
            runs.push(Run {
                transport,
                clients: n,
                batch: delta("kipam_commit_batch_size_sum") / batches,
                commit: Duration::from_secs_f64(
                    delta("kipam_store_commit_duration_seconds_sum") / commits,
                ),
                cpu_per_alloc: cpu / (alloc.ok.max(1) as u32),
                client_cpu_per_alloc: own / (alloc.ok.max(1) as u32),
                busy: machine_busy(alloc.wall, cpu + own),
                alloc,
                release,
                timeline,
            });
        }
    }
    d.stop()?;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let large = if o.fill > 0 { Some(large(o)?) } else { None };
    report::print(&runs, large.as_ref(), o.duration);
    Ok(())
}

/// Every [`SAMPLE_EVERY`] until `done`: the allocations made since the last sample (per
/// second) and kipamd's CPU time per allocation meanwhile. A run that slows down as the
/// store grows shows it here, where the run's mean hides it.
fn sample(pid: u32, progress: &AtomicU64, done: &AtomicBool) -> Vec<(f64, Duration)> {
    let stat = format!("/proc/{pid}/stat");
    let mut out = Vec::new();
    let (mut n0, mut cpu0, mut t0) = (
        progress.load(Ordering::Relaxed),
        daemon::cpu_of(&stat).unwrap_or_default(),
        Instant::now(),
    );
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if t0.elapsed() < SAMPLE_EVERY {
            continue;
        }
        let (n, cpu, t) = (
            progress.load(Ordering::Relaxed),
            daemon::cpu_of(&stat).unwrap_or_default(),
            Instant::now(),
        );
        let made = n.saturating_sub(n0);
        out.push((
            made as f64 / t.duration_since(t0).as_secs_f64(),
            cpu.saturating_sub(cpu0) / (made.max(1) as u32),
        ));
        (n0, cpu0, t0) = (n, cpu, t);
    }
    out
}

/// Fill through the API, read RSS, restart, time readiness, read RSS again.
fn large(o: &Options) -> Result<Large> {
    let dir = fresh_dir(o, "large")?;
    let (fill, held, rss_filled) = if o.offline {
        let started = Instant::now();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        prefill::offline(&dir, o.fill, now)?;
        let fill = load::Phase {
            ok: o.fill,
            wall: started.elapsed(),
            latencies: Vec::new(),
        };
        eprintln!("wrote {} allocations offline in {:.1?}", o.fill, fill.wall);
        (fill, o.fill, None)
    } else {
        let (fill, held, rss) = fill_through_api(o, &dir)?;
        (fill, held, Some(rss))
    };
    let store_bytes = store_size(&dir);

    let t0 = Instant::now();
    let d = Daemon::start(&o.kipamd, &dir)?;
    let listening = t0.elapsed();
    let ready = d.wait_ready(Duration::from_secs(300))? - t0;
    let rss_restarted = d.memory()?;
    let again = d
        .client(false)
        .get_pool(POOL)
        .map_err(|e| format!("reading the pool after the restart: {e}"))?
        .usage
        .held;
    if again != held {
        return Err(format!("{held} held before the restart, {again} after").into());
    }
    d.stop()?;
    if !o.keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(Large {
        held,
        offline: o.offline,
        fill,
        rss_filled,
        rss_restarted,
        ready,
        listening,
        store_bytes,
    })
}

/// 64 clients fill the store through the unix socket; returns the phase, what the pool
/// holds, and kipamd's memory after the fill. kipamd is stopped after.
fn fill_through_api(o: &Options, dir: &Path) -> Result<(load::Phase, u64, (u64, u64))> {
    let d = Daemon::start(&o.kipamd, dir)?;
    d.wait_ready(Duration::from_secs(60))?;
    create_pool(&d)?;
    let clients: Vec<_> = (0..64).map(|_| d.client(true)).collect();
    let per_client = o.fill.div_ceil(64);
    let progress = AtomicU64::new(0);
    let (fill, _) = std::thread::scope(|s| {
        let reporter = s.spawn(|| {
            let started = Instant::now();
            let mut next = Duration::from_secs(10);
            loop {
                std::thread::sleep(Duration::from_millis(100));
                let n = progress.load(Ordering::Relaxed);
                if n >= per_client * 64 {
                    return;
                }
                if started.elapsed() >= next {
                    next += Duration::from_secs(10);
                    eprintln!("fill: {n} allocations after {:.0?}", started.elapsed());
                }
            }
        });
        let out = load::allocate(&clients, "fill", Amount::Each(per_client), Some(&progress));
        // A failed fill stops early: let the reporter end too.
        progress.store(u64::MAX / 2, Ordering::Relaxed);
        let _ = reporter.join();
        out
    })?;
    let held = d
        .client(false)
        .get_pool(POOL)
        .map_err(|e| format!("reading the pool: {e}"))?
        .usage
        .held;
    let rss_filled = d.memory()?;
    eprintln!("filled {held} in {:.1?}; stopping kipamd", fill.wall);
    d.stop()?;
    Ok((fill, held, rss_filled))
}

/// The share of the machine's CPU time (all CPUs over `wall`) that kipamd and the clients
/// used together; the rest went to other work on the machine or stayed idle.
fn machine_busy(wall: Duration, ours: Duration) -> f64 {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    (ours.as_secs_f64() / (wall.as_secs_f64() * cpus)).min(1.0)
}

fn store_size(dir: &Path) -> u64 {
    ["kipam.db", "kipam.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}
