//! `kipam-cni-bench`: the `kipam` CNI plugin against `host-local`, one process exec per
//! CNI call, exactly as a runtime (or the `bridge` plugin) calls an IPAM plugin.
//!
//! For every number of addresses already allocated (default 0, 1,000 and 60,000 in
//! 10.123.0.0/16) and for both a sequential and a 16-way parallel run, each plugin gets a
//! fresh data directory, pre-filled without execs ([`prefill`]); then N ADDs are exec'd
//! and timed, then the DELs of those same attachments. In sequential runs the two
//! plugins' calls are interleaved (one kipam call, one host-local call, ...), so other
//! load on the machine hits both alike and the ratio stays fair; parallel runs give each
//! plugin the 16 callers alone, one plugin after the other. `/bin/true` runs the same way
//! in the first scenario, as the floor. The table gives ADD and DEL p50/p99
//! per plugin, the host-local/kipam ratio, a bare exec of `/bin/true` as the floor, and
//! whether the targets of issue 3 are met.
//!
//! kipam runs with its default config (30 s quarantine before a released address is
//! reused, `synchronous=FULL`): the realistic setting, not a tuned one. No interface is
//! created and no packet is sent: IPAM plugins do not touch the netns, so `CNI_NETNS`
//! names a path that need not exist. The subnet is checked against `ip route` first.
//!
//! Run it through `bench/cni-vs-host-local.sh` (release build); `--help` lists options.

mod exec;
mod prefill;
mod report;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use ipnet::Ipv4Net;

use crate::exec::{Caller, Mode, run_interleaved};
use crate::report::{Row, Stats};

/// Errors of this program: it only reports them, so one boxed type is enough.
pub type Error = kipam_testkit::BenchError;
/// Result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The CNI network name both plugins are given.
pub const NETWORK: &str = "kipambench";

const USAGE: &str = "usage: kipam-cni-bench [options]
  --iterations N         sequential ADDs (then DELs) per plugin and scenario [200]
  --threads T            parallel callers [16]
  --per-thread M         ADDs (then DELs) per parallel caller [25]
  --allocated LIST       addresses already allocated, comma-separated [0,1000,60000]
  --large-from K         host-local with >= K allocated walks K state files per call
                         (~0.6 s at 60,000): it then gets --large-iterations sequential
                         calls and --large-per-thread per caller instead [10000]
  --large-iterations N   [20]
  --large-per-thread M   [2]
  --subnet CIDR          IPv4 range both plugins allocate from [10.123.0.0/16]
  --work-dir DIR         data directories go here (use the disk a node would) [/var/tmp/kipam-cni-bench]
  --prefill-dir DIR      where kipam's pre-filled store is built before copying (tmpfs) [/dev/shm]
  --kipam PATH           the kipam plugin [next to this program: kipam]
  --host-local PATH      [/usr/lib/cni/host-local]
  --keep                 keep the data directories";

/// What to run.
#[derive(Debug, Clone)]
struct Options {
    iterations: usize,
    threads: usize,
    per_thread: usize,
    allocated: Vec<u32>,
    large_from: u32,
    large_iterations: usize,
    large_per_thread: usize,
    subnet: Ipv4Net,
    work_dir: PathBuf,
    prefill_dir: PathBuf,
    kipam: PathBuf,
    host_local: PathBuf,
    keep: bool,
}

/// The two plugins compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plugin {
    /// kipam, standalone mode (SQLite under `dataDir`).
    Kipam,
    /// host-local from containernetworking-plugins (one file per address).
    HostLocal,
}

impl Plugin {
    /// The name used in tables and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Plugin::Kipam => "kipam",
            Plugin::HostLocal => "host-local",
        }
    }
}

fn main() -> ExitCode {
    kipam_testkit::bench_main("kipam-cni-bench", USAGE, parse_args, run)
}

fn parse_args(args: &[String]) -> Result<Options> {
    let exe = std::env::current_exe().map_err(|e| format!("locating this program: {e}"))?;
    let mut o = Options {
        iterations: 200,
        threads: 16,
        per_thread: 25,
        allocated: vec![0, 1_000, 60_000],
        large_from: 10_000,
        large_iterations: 20,
        large_per_thread: 2,
        subnet: Ipv4Net::new(Ipv4Addr::new(10, 123, 0, 0), 16)?,
        work_dir: PathBuf::from("/var/tmp/kipam-cni-bench"),
        prefill_dir: PathBuf::from("/dev/shm"),
        kipam: exe.with_file_name("kipam"),
        host_local: PathBuf::from("/usr/lib/cni/host-local"),
        keep: false,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--keep" {
            o.keep = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| -> Result<usize> {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{flag} wants a positive number, got {v:?}").into())
        };
        match flag.as_str() {
            "--iterations" => o.iterations = number(value)?,
            "--threads" => o.threads = number(value)?,
            "--per-thread" => o.per_thread = number(value)?,
            "--large-iterations" => o.large_iterations = number(value)?,
            "--large-per-thread" => o.large_per_thread = number(value)?,
            "--large-from" => {
                o.large_from = value
                    .parse()
                    .map_err(|_| format!("--large-from wants a number, got {value:?}"))?;
            }
            "--allocated" => {
                o.allocated = value
                    .split(',')
                    .map(|n| {
                        n.trim()
                            .parse::<u32>()
                            .map_err(|_| format!("--allocated: {n:?} is not a number"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--subnet" => {
                o.subnet = value
                    .parse()
                    .map_err(|_| format!("--subnet: {value:?} is not an IPv4 CIDR"))?;
            }
            "--work-dir" => o.work_dir = PathBuf::from(value),
            "--prefill-dir" => o.prefill_dir = PathBuf::from(value),
            "--kipam" => o.kipam = PathBuf::from(value),
            "--host-local" => o.host_local = PathBuf::from(value),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    // host-local hands out network+2 .. broadcast-1 (network+1 is the gateway).
    let usable = u64::from(u32::MAX >> o.subnet.prefix_len()).saturating_sub(2);
    let most = o.iterations.max(o.threads * o.per_thread) as u64;
    if let Some(&a) = o.allocated.iter().max()
        && u64::from(a) + most > usable
    {
        return Err(format!(
            "{} has {usable} usable addresses: too few for {a} allocated plus {most} ADDs",
            o.subnet
        )
        .into());
    }
    Ok(o)
}

fn run(o: &Options) -> Result<()> {
    for bin in [&o.kipam, &o.host_local] {
        if !bin.is_file() {
            return Err(format!("plugin {} not found", bin.display()).into());
        }
    }
    check_routes(o.subnet)?;
    std::fs::create_dir_all(&o.work_dir)
        .map_err(|e| format!("creating {}: {e}", o.work_dir.display()))?;
    let cni_path = [o.kipam.parent(), o.host_local.parent()]
        .into_iter()
        .flatten()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let seq = Mode::Sequential;
    let par = Mode::Parallel { threads: o.threads };

    // /bin/true runs interleaved with the first scenario's calls: the floor under the same
    // load as the plugins.
    let truth = Caller::new(Path::new("/bin/true"), &cni_path, b"{}".to_vec());
    let ids =
        |n: usize, tag: &str| -> Vec<String> { (0..n).map(|i| format!("{tag}-{i}")).collect() };
    let mut baseline = Vec::new();
    let mut rows = Vec::new();
    for (nth, &allocated) in o.allocated.iter().enumerate() {
        let template = (allocated > 0)
            .then(|| prefill::kipam_template(&o.prefill_dir, o.subnet, allocated))
            .transpose()?;
        for mode in [seq, par] {
            let mut callers = Vec::new();
            for plugin in [Plugin::Kipam, Plugin::HostLocal] {
                let large = plugin == Plugin::HostLocal && allocated >= o.large_from;
                let n = match (mode, large) {
                    (Mode::Sequential, false) => o.iterations,
                    (Mode::Sequential, true) => o.large_iterations,
                    (Mode::Parallel { threads }, false) => threads * o.per_thread,
                    (Mode::Parallel { threads }, true) => threads * o.large_per_thread,
                };
                let dir = o
                    .work_dir
                    .join(format!("{}-{allocated}-{}", plugin.name(), mode.name()));
                remove_dir(&dir)?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                let started = Instant::now();
                match (plugin, &template) {
                    (Plugin::Kipam, Some(t)) => t.copy_to(&dir)?,
                    (Plugin::Kipam, None) => {}
                    (Plugin::HostLocal, _) => {
                        prefill::host_local(&dir, NETWORK, o.subnet, allocated)?;
                    }
                }
                eprintln!(
                    "{} {allocated} allocated, {}: pre-filled in {:.1?}; {n} ADDs then {n} DELs",
                    plugin.name(),
                    mode.name(),
                    started.elapsed()
                );
                let bin = match plugin {
                    Plugin::Kipam => &o.kipam,
                    Plugin::HostLocal => &o.host_local,
                };
                let caller = Caller::new(bin, &cni_path, config(plugin, &dir, o.subnet));
                callers.push((plugin, dir, caller, ids(n, "bench")));
            }
            // Write back the pre-fill now, not during the timed fsyncs.
            prefill::sync()?;
            let floor = (nth == 0).then(|| ids(callers[0].3.len(), "true"));
            let mut jobs: Vec<(&Caller, &[String])> = callers
                .iter()
                .map(|(_, _, c, names)| (c, names.as_slice()))
                .collect();
            if let Some(f) = &floor {
                jobs.push((&truth, f.as_slice()));
            }
            let mut adds = run_jobs(mode, "ADD", &jobs)?.into_iter();
            if floor.is_some() {
                // The floor has nothing to delete.
                jobs.pop();
            }
            let mut dels = run_jobs(mode, "DEL", &jobs)?.into_iter();
            for (plugin, dir, _, _) in &callers {
                let add = Stats::of(adds.next().unwrap_or_default());
                let del = Stats::of(dels.next().unwrap_or_default());
                rows.push(Row::new(
                    format!("{allocated} allocated"),
                    mode.name(),
                    plugin.name(),
                    add,
                    Some(del),
                ));
                if !o.keep {
                    remove_dir(dir)?;
                }
            }
            if let Some(samples) = adds.next() {
                baseline.push(Row::new(
                    format!("exec /bin/true (during {allocated} allocated)"),
                    mode.name(),
                    "-",
                    Stats::of(samples),
                    None,
                ));
            }
        }
        if let Some(t) = template {
            t.remove()?;
        }
    }
    report::print(o, &rows, &baseline);
    Ok(())
}

/// Sequential: the jobs' calls interleaved (fair under outside load). Parallel: each job
/// alone with all callers in turn, so "16-way" means 16 concurrent execs of one plugin.
fn run_jobs(
    mode: Mode,
    command: &str,
    jobs: &[(&Caller, &[String])],
) -> Result<Vec<Vec<std::time::Duration>>> {
    match mode {
        Mode::Sequential => run_interleaved(mode, command, jobs),
        Mode::Parallel { .. } => jobs
            .iter()
            .map(|job| {
                run_interleaved(mode, command, std::slice::from_ref(job))
                    .map(|mut v| v.pop().unwrap_or_default())
            })
            .collect(),
    }
}

/// The network config on stdin: the same ranges for both plugins, defaults otherwise.
fn config(plugin: Plugin, data_dir: &Path, subnet: Ipv4Net) -> Vec<u8> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": NETWORK,
        "type": "bridge",
        "ipam": {
            "type": plugin.name(),
            "dataDir": data_dir,
            "ranges": [[{"subnet": subnet.to_string()}]],
        },
    });
    conf.to_string().into_bytes()
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(format!("removing {}: {e}", dir.display()).into())
        }
        _ => Ok(()),
    }
}

/// Refuses a subnet that overlaps any route of this machine: the bench sends no traffic,
/// but a range that shadows a real network is a mistake worth stopping for.
fn check_routes(subnet: Ipv4Net) -> Result<()> {
    let out = Command::new("ip")
        .args(["-4", "route", "show", "table", "all"])
        .output()
        .map_err(|e| format!("running `ip route`: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`ip route` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into());
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // The destination is the first token that parses ("local 10.0.0.1 ...", "10.0.0.0/8 dev ...").
        let dst = line.split_whitespace().find_map(|t| {
            t.parse::<Ipv4Net>()
                .ok()
                .or_else(|| t.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
        });
        if let Some(dst) = dst
            && (dst.contains(&subnet.network()) || subnet.contains(&dst.network()))
        {
            return Err(format!(
                "{subnet} overlaps the route `{line}`; pick another range with --subnet"
            )
            .into());
        }
    }
    Ok(())
}
