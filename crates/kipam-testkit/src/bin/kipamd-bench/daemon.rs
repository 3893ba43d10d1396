//! One kipamd process under test: start it on a data directory, find where it listens,
//! wait until it is ready, read its memory, CPU time and metrics, stop it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kipam_api::client::{Client, Endpoint};

use crate::Result;

/// A running kipamd.
pub struct Daemon {
    child: Child,
    /// `127.0.0.1:PORT` it listens on.
    pub tcp: String,
    /// Its unix socket.
    pub socket: PathBuf,
}

impl Daemon {
    /// Starts `bin` on `data` (TCP on a free loopback port, the socket in `data`) and
    /// returns once it listens; it may still be loading (see [`Daemon::wait_ready`]).
    pub fn start(bin: &Path, data: &Path) -> Result<Daemon> {
        let socket = data.join("kipamd.sock");
        let mut child = Command::new(bin)
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--socket"])
            .arg(&socket)
            .env("KIPAM_LOG", "info")
            .env_remove("KIPAM_TOKENS")
            .env_remove("KIPAM_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let stderr = child.stderr.take().ok_or("kipamd's stderr is not piped")?;
        let (tx, rx) = mpsc::channel();
        // Drain the log for the whole life of the process (a full pipe would stall it);
        // warnings and errors are passed on.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(addr.to_string());
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("kipamd: {line}");
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(tcp) => Ok(Daemon { child, tcp, socket }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("kipamd did not start listening within 30 s".into())
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client over TCP or the unix socket.
    pub fn client(&self, unix: bool) -> Client {
        let endpoint = if unix {
            Endpoint::Unix(self.socket.clone())
        } else {
            Endpoint::Tcp(self.tcp.clone())
        };
        Client::new(endpoint).with_timeout(Duration::from_secs(60))
    }

    /// Polls `/readyz` every millisecond until it answers 200; returns when it did.
    pub fn wait_ready(&self, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        let c = self.client(false);
        loop {
            if c.ready().is_ok() {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                return Err(format!("kipamd not ready within {within:?}").into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Resident and peak resident memory in bytes (`VmRSS`, `VmHWM`).
    pub fn memory(&self) -> Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .map_err(|e| format!("reading kipamd's /proc status: {e}"))?;
        let field = |name: &str| -> Result<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
                .ok_or_else(|| format!("no {name} in /proc/PID/status").into())
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu(&self) -> Result<Duration> {
        cpu_of(&format!("/proc/{}/stat", self.pid()))
    }

    /// The numeric samples of `/metrics` (name with labels -> value).
    pub fn metrics(&self) -> Result<Vec<(String, f64)>> {
        let resp = self
            .client(false)
            .raw("GET", "/metrics", &[], None)
            .map_err(|e| format!("GET /metrics: {e}"))?;
        let text = String::from_utf8_lossy(&resp.body);
        Ok(text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                Some((name.to_string(), value.parse().ok()?))
            })
            .collect())
    }

    /// SIGTERM (through kill(1): this crate forbids unsafe code) and wait for the exit.
    pub fn stop(mut self) -> Result<()> {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .map_err(|e| format!("running kill: {e}"))?;
        if !ok.success() {
            return Err("kill -TERM kipamd failed".into());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait()? {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("kipamd exited with {st}").into())
                };
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err("kipamd did not stop within 60 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU time of a process or thread from its `stat` file (fields 14 and 15, in clock
/// ticks of 1/100 s, the value on every Linux kernel we run on).
pub fn cpu_of(stat_path: &str) -> Result<Duration> {
    let stat =
        std::fs::read_to_string(stat_path).map_err(|e| format!("reading {stat_path}: {e}"))?;
    // The command name may contain spaces: fields are counted after its closing ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("malformed {stat_path}").into())
    };
    // After ')': field 3 (state) is index 0, so utime (14) is index 11, stime (15) 12.
    Ok(Duration::from_millis((tick(11)? + tick(12)?) * 10))
}

/// A metric's value, summed over all label sets of `name` (exact name, labels ignored).
pub fn metric(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(n, _)| n == name || n.strip_prefix(name).is_some_and(|r| r.starts_with('{')))
        .map(|(_, v)| v)
        .sum()
}
