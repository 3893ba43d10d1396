//! Execs a plugin once per CNI call and times it, sequentially or from many threads.
//!
//! A call is timed from just before the spawn to the child's exit with its stdout read:
//! what a runtime waits for. The environment is cleared and set to exactly the CNI
//! variables (plus `PATH`, and any `KIPAM_*` variable of the bench's own environment, for
//! experiments), so both plugins see the same thing and nothing else of the caller's
//! environment leaks in. A call that fails ends the benchmark with the plugin's
//! output: a latency of a failed call would mean nothing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::Result;

/// Sequential or parallel callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One call at a time.
    Sequential,
    /// `threads` callers at once, each exec'ing its share of the calls in turn.
    Parallel {
        /// How many callers.
        threads: usize,
    },
}

impl Mode {
    /// The name used in tables and directory names.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Sequential => "sequential",
            Mode::Parallel { .. } => "parallel",
        }
    }
}

/// Runs `command` for every `(caller, ids)` job, the jobs' calls interleaved (one call of
/// each job in turn), so that whatever else the machine is doing slows every job alike and
/// their ratio stays fair. In parallel mode each thread takes its share of every job's
/// IDs and interleaves those. Returns each job's latencies, in job order.
pub fn run_interleaved(
    mode: Mode,
    command: &str,
    jobs: &[(&Caller, &[String])],
) -> Result<Vec<Vec<Duration>>> {
    let threads = match mode {
        Mode::Sequential => 1,
        Mode::Parallel { threads } => threads.max(1),
    };
    // shares[t][j]: the IDs of job j that thread t calls.
    let shares: Vec<Vec<&[String]>> = (0..threads)
        .map(|t| {
            jobs.iter()
                .map(|(_, ids)| {
                    let chunk = ids.len().div_ceil(threads).max(1);
                    ids.chunks(chunk).nth(t).unwrap_or(&[])
                })
                .collect()
        })
        .collect();
    let start = Barrier::new(threads);
    let per_thread: Vec<Vec<Vec<Duration>>> = std::thread::scope(|s| {
        let workers: Vec<_> = shares
            .iter()
            .map(|share| {
                let start = &start;
                s.spawn(move || -> Result<Vec<Vec<Duration>>> {
                    start.wait();
                    let mut got: Vec<Vec<Duration>> = vec![Vec::new(); jobs.len()];
                    let longest = share.iter().map(|ids| ids.len()).max().unwrap_or(0);
                    for i in 0..longest {
                        for (j, ids) in share.iter().enumerate() {
                            if let Some(id) = ids.get(i) {
                                got[j].push(jobs[j].0.call(command, id)?);
                            }
                        }
                    }
                    Ok(got)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| "a caller thread panicked".to_string())?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); jobs.len()];
    for got in per_thread {
        for (j, samples) in got.into_iter().enumerate() {
            all[j].extend(samples);
        }
    }
    Ok(all)
}

/// Execs one plugin binary with one network config.
#[derive(Debug, Clone)]
pub struct Caller {
    bin: PathBuf,
    cni_path: String,
    stdin: Vec<u8>,
}

impl Caller {
    /// A caller of `bin` with `CNI_PATH=cni_path`, writing `stdin` to every exec.
    pub fn new(bin: &Path, cni_path: &str, stdin: Vec<u8>) -> Caller {
        Caller {
            bin: bin.to_owned(),
            cni_path: cni_path.to_owned(),
            stdin,
        }
    }

    /// One exec: spawn, write the config to stdin, wait for exit and stdout.
    fn call(&self, command: &str, container_id: &str) -> Result<Duration> {
        let started = Instant::now();
        let mut child = Command::new(&self.bin)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id)
            // IPAM plugins never enter the netns; the path need not exist.
            .env("CNI_NETNS", "/var/run/netns/none-is-fine-for-ipam")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", &self.cni_path)
            .envs(std::env::vars().filter(|(k, _)| k.starts_with("KIPAM_")))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", self.bin.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that exits without reading (the /bin/true baseline) closes the
            // pipe first; that is not a failure of the call.
            match stdin.write_all(&self.stdin) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    return Err(format!("writing stdin of {}: {e}", self.bin.display()).into());
                }
                _ => {}
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {}: {e}", self.bin.display()))?;
        let took = started.elapsed();
        if !out.status.success() {
            return Err(format!(
                "{} {command} {container_id} failed ({}): stdout {} stderr {}",
                self.bin.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        Ok(took)
    }
}
