//! Crash consistency of the SQLite-backed IPAM store with real processes.
//!
//! Two child processes (`kipam-crash-child`) allocate and release against one store file
//! at once; the parent reads what each reported as committed, kills both with SIGKILL at a
//! random moment, and after every kill opens the store and checks: the integrity check
//! passes (every address in exactly one state, handles agree with blocks, no overlap) and
//! every allocation a child reported (and did not release) is there with its address.
//! 60 rounds; the seed is printed so a failure can be replayed with KIPAM_CRASH_SEED.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kipam_core::PoolConfig;
use kipam_store::{IpamStore, SqliteOptions, SqliteStore};
use kipam_testkit::{Rng, now_millis};

const ROUNDS: u32 = 60;
const CHILD: &str = env!("CARGO_BIN_EXE_kipam-crash-child");

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path) -> IpamStore<SqliteStore> {
    let store = SqliteStore::open(
        dir,
        &SqliteOptions {
            create_dir: true,
            ..SqliteOptions::default()
        },
    )
    .expect("the store opens after a kill");
    IpamStore::new(store)
}

/// Runs one child until killed; returns the lines it printed.
fn run_children(dir: &Path, round: u32, rng: &mut Rng) -> Vec<String> {
    let (tx, rx) = mpsc::channel::<String>();
    let mut children = Vec::new();
    for c in 0..2 {
        let mut child = Command::new(CHILD)
            .arg(dir)
            .arg("crash-pool")
            .arg(format!("r{round}c{c}"))
            .arg(rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the crash child");
        let stdout = child.stdout.take().expect("piped stdout");
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    // Kill at a random moment: sometimes before the first commit, mostly mid-stream.
    let deadline = Instant::now() + Duration::from_millis(rng.range(1, 120));
    let mut lines = Vec::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(1)) {
            Ok(l) => lines.push(l),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    for child in &mut children {
        // Child::kill sends SIGKILL on Unix.
        let _ = child.kill();
    }
    for mut child in children {
        let status = child.wait().expect("reap the child");
        assert!(
            status.code().is_none() || status.success(),
            "a child failed on its own before the kill: {status}"
        );
    }
    // Lines already read by the pipe threads were printed before the kill: they count.
    lines.extend(rx.iter());
    lines
}

#[test]
fn sigkill_at_random_points_loses_nothing_and_never_double_allocates() {
    let seed = std::env::var("KIPAM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(Rng::seed_from_clock);
    println!("crash test seed: {seed}");
    let mut rng = Rng::new(seed);
    let dir =
        TempDir(std::env::temp_dir().join(format!("kipam-crash-{}-{seed}", std::process::id())));
    let ipam = open(&dir.0);
    let mut config = PoolConfig::new("crash-pool", "10.99.0.0/16".parse().expect("CIDR"));
    config.reuse_delay_seconds = 1;
    ipam.create_pool(&config, now_millis())
        .expect("create the pool");
    drop(ipam);

    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    let mut committed = 0usize;
    let mut released = 0usize;
    for round in 0..ROUNDS {
        for line in run_children(&dir.0, round, &mut rng) {
            let mut parts = line.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some("OK"), Some(h), Some(addr)) => {
                    committed += 1;
                    expected.insert(h.to_string(), addr.to_string());
                }
                (Some("RELEASING"), Some(h), None) => {
                    expected.remove(h);
                }
                (Some("REL"), Some(_), None) => released += 1,
                _ => panic!("unexpected child output: {line:?}"),
            }
        }
        let ipam = open(&dir.0);
        ipam.store()
            .check_integrity()
            .expect("SQLite integrity_check passes");
        let report = ipam
            .check_integrity(now_millis())
            .expect("the IPAM integrity check runs");
        assert!(
            report.ok(),
            "round {round} (seed {seed}): {:?}",
            report.problems
        );
        for (h, addr) in &expected {
            let handle = ipam
                .handle(h)
                .expect("read handle")
                .unwrap_or_else(|| panic!("round {round} (seed {seed}): committed {h} is gone"));
            let got: Vec<String> = handle.addrs.iter().map(|a| a.addr.to_string()).collect();
            assert_eq!(
                &got.join(","),
                addr,
                "round {round} (seed {seed}): {h} changed address"
            );
        }
    }
    println!(
        "{ROUNDS} kill rounds, {committed} committed allocations and {released} releases reported, {} still held, all present",
        expected.len()
    );
    assert!(
        committed > 0,
        "the children never committed anything; the test proved nothing"
    );
}
