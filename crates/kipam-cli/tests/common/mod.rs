//! Helpers of kipamctl's end-to-end tests: start the real `kipamd` on 127.0.0.1 (port 0)
//! with a throwaway data directory, run the real `kipamctl` binary against it, and look
//! at exit codes, stdout and stderr as a script would.
//!
//! # Finding kipamd
//! Cargo gives a test the paths of its own crate's binaries (`CARGO_BIN_EXE_kipamctl`)
//! but never builds or exposes another crate's binaries, even of a dev-dependency. So
//! [`kipamd`] builds it: `cargo build -p kipam-server --bin kipamd` with the cargo that
//! runs the tests (`$CARGO`), into the target directory and profile kipamctl was built in
//! (derived from kipamctl's path, so `CARGO_TARGET_DIR` and `--release` are respected),
//! once per test process. When kipamd is up to date that is a no-op of a fraction of a
//! second, and a stale kipamd is never tested by accident. `KIPAM_KIPAMD=/path` skips
//! the build and uses that binary.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::{Duration, Instant};

/// kipamctl, as cargo built it for this test.
pub fn kipamctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kipamctl"))
}

/// kipamd, built on first use next to kipamctl (see the module doc).
pub fn kipamd() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(p) = std::env::var_os("KIPAM_KIPAMD") {
            return PathBuf::from(p);
        }
        let ctl = kipamctl();
        let profile_dir = ctl.parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "kipam-server", "--bin", "kipamd"])
            .arg("--target-dir")
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if release {
            cmd.arg("--release");
        }
        let out = cmd.output().expect("run cargo to build kipamd");
        assert!(
            out.status.success(),
            "building kipamd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = profile_dir.join("kipamd");
        assert!(
            path.exists(),
            "cargo built kipamd but {} is missing",
            path.display()
        );
        path
    })
    .clone()
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("kipamctl-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes a file in the directory and returns its path.
    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running kipamd, killed on drop.
pub struct Daemon {
    child: Option<Child>,
    pub addr: String,
    pub dir: TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Daemon {
    /// Starts kipamd with `--data <tmp> --listen 127.0.0.1:0` plus `extra` and waits
    /// until it is ready.
    pub fn start(extra: &[&str]) -> Daemon {
        let dir = TempDir::new("d");
        let mut child = Command::new(kipamd())
            .arg("--data")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("KIPAM_LOG", "info")
            .env_remove("KIPAM_TOKENS")
            .env_remove("KIPAM_CONFIG")
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
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("kipamd did not start: {:?}", log.lock().unwrap());
            }
        };
        let d = Daemon {
            child: Some(child),
            addr,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while d.client().ready().is_err() {
            assert!(Instant::now() < deadline, "kipamd not ready: {:?}", d.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("kipamd.sock")
    }

    /// A client of the API (to set things up faster than through kipamctl).
    pub fn client(&self) -> kipam_api::client::Client {
        kipam_api::client::Client::new(kipam_api::client::Endpoint::Tcp(self.addr.clone()))
            .with_timeout(Duration::from_secs(20))
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Runs kipamctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Run {
        ctl_at(&self.url(), args)
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

/// What a kipamctl run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts exit code 0 and returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, 0, "kipamctl failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit code 0 and parses stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }

    /// Asserts the exit code and that stderr contains every one of `needles`.
    #[track_caller]
    pub fn fails(&self, code: i32, needles: &[&str]) {
        assert_eq!(self.code, code, "{self:#?}");
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}: {self:#?}");
        }
    }
}

/// A kipamctl command with a clean environment (no token, no server from the caller).
pub fn ctl_cmd(server: &str, args: &[&str]) -> Command {
    let mut c = Command::new(kipamctl());
    c.arg("--server")
        .arg(server)
        .args(args)
        .env_remove("KIPAM_TOKEN")
        .env_remove("KIPAM_SERVER")
        .stdin(Stdio::null());
    c
}

/// Runs kipamctl with `--server server`.
pub fn ctl_at(server: &str, args: &[&str]) -> Run {
    Run::from(ctl_cmd(server, args).output().unwrap())
}

/// Runs kipamctl with `stdin` as its standard input.
pub fn ctl_stdin(server: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = ctl_cmd(server, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    Run::from(child.wait_with_output().unwrap())
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
    if let Some(log) = std::env::var_os("KIPAM_SKIP_LOG")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
    {
        let _ = writeln!(f, "{test}: {why}");
    }
}

/// The seed scenario of issue 5 as a plan file: 5,000 pods growing to 10,000,
/// dual-stack, clear of an on-prem 10.0.0.0/16 and a VPC 172.16.0.0/12.
pub const SEED_YAML: &str = "\
# 5,000 pods today, 10,000 at the horizon; dual-stack
supernets: [172.16.0.0/12, 10.0.0.0/8, fd00::/48]
avoid:
  - {cidr: 10.0.0.0/16, label: on-prem}
  - {cidr: 172.16.0.0/12, label: vpc}
clusters:
  - name: prod
    pods: 5000
    podsAtHorizon: 10000
    services: 2000
    loadBalancers: 50
    families: dual-stack
";

/// Three clusters carved from one supernet.
pub const THREE_YAML: &str = "\
supernets: [10.64.0.0/12]
avoid: [{cidr: 10.64.0.0/14, label: office}]
clusters:
  - {name: small, nodes: 40, nodesAtHorizon: 120, services: 500}
  - {name: large, nodes: 300, nodesAtHorizon: 900, services: 5000, loadBalancers: 200}
  - {name: edge, nodes: 10, maxPodsPerNode: 30, services: 50, loadBalancers: 10}
";
