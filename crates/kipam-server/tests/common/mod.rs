//! Test helpers: start the real `kipamd` binary on 127.0.0.1 (port 0) with a throwaway
//! data directory, find where it listens from its log, and talk to it with the blocking
//! client. The daemon is killed and its directory removed on drop.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use kipam_api::client::{Client, Endpoint};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("kipamd-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running kipamd.
pub struct Daemon {
    pub child: Option<Child>,
    pub addr: String,
    pub dir: TempDir,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts kipamd with `--data <tmp> --listen 127.0.0.1:0` plus `extra` flags and waits
    /// until it is ready.
    pub fn start(extra: &[&str]) -> Daemon {
        Daemon::start_in(TempDir::new("d"), extra)
    }

    pub fn start_in(dir: TempDir, extra: &[&str]) -> Daemon {
        let (child, log, addr) = spawn_kipamd(dir.path(), "127.0.0.1:0", extra);
        let Some(addr) = addr else {
            let mut child = child;
            let _ = child.kill();
            panic!("kipamd did not start: {:?}", log.lock().unwrap());
        };
        let d = Daemon {
            child: Some(child),
            addr,
            dir,
            log,
        };
        d.wait_ready();
        d
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.client().ready().is_err() {
            assert!(
                Instant::now() < deadline,
                "kipamd not ready: {:?}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A TCP client without a token.
    pub fn client(&self) -> Client {
        Client::new(Endpoint::Tcp(self.addr.clone())).with_timeout(Duration::from_secs(20))
    }

    /// A client over the unix socket.
    pub fn socket_client(&self) -> Client {
        Client::new(Endpoint::Unix(self.socket())).with_timeout(Duration::from_secs(20))
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("kipamd.sock")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Sends a signal with kill(1) (the crate forbids unsafe code, so no libc::kill).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("kipamd did not exit within {within:?}: {:?}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs kipamd to completion with `args` (for refusals at start); returns (code, stderr).
pub fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kipamd"))
        .args(args)
        .env_remove("KIPAM_TOKENS")
        .env_remove("KIPAM_CONFIG")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Spawns kipamd on `dir` listening on `listen` (plus `extra` flags), collects its log,
/// and returns the TCP address it says it listens on (None if it did not within 30 s).
pub fn spawn_kipamd(
    dir: &Path,
    listen: &str,
    extra: &[&str],
) -> (Child, Arc<Mutex<Vec<String>>>, Option<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kipamd"))
        .arg("--data")
        .arg(dir)
        .args(["--listen", listen])
        .args(extra)
        .env("KIPAM_LOG", "info")
        .env_remove("KIPAM_TOKENS")
        .env_remove("KIPAM_CONFIG")
        .env_remove("KIPAM_SOCKET")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or_default();
                let _ = tx.send(addr.to_string());
            }
            log2.lock().unwrap().push(line);
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).ok();
    (child, log, addr)
}

/// Reports a test that cannot run here: fails under KIPAM_REQUIRE_REAL (CI), else prints
/// SKIPPED and records it in $KIPAM_SKIP_LOG for scripts/test to count.
pub fn skip(test: &str, why: &str) {
    assert!(
        std::env::var_os("KIPAM_REQUIRE_REAL").is_none(),
        "{test} cannot run here ({why}) and KIPAM_REQUIRE_REAL forbids skipping"
    );
    eprintln!("SKIPPED: {test}: {why}");
    println!("SKIPPED: {test}: {why}");
    if let Some(log) = std::env::var_os("KIPAM_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
}

pub fn pool(name: &str, cidr: &str) -> kipam_core::PoolConfig {
    kipam_core::PoolConfig::new(name, cidr.parse().unwrap())
}
