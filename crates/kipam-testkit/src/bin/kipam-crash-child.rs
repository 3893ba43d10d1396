//! Crash-test child: `kipam-crash-child DIR POOL TAG SEED`.
//!
//! Allocates addresses for handles `TAG-N` from POOL in the SQLite store in DIR, releasing
//! some of them, forever. After each committed step it prints one line and flushes:
//! `OK <handle> <addr>` or `REL <handle>`. A line is printed only after the store call
//! returned, i.e. after the commit was durable, so every line the parent read describes
//! state that must survive a SIGKILL.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use kipam_core::{AllocRequest, Source, Want};
use kipam_store::{IpamStore, SqliteOptions, SqliteStore};
use kipam_testkit::{Rng, now_millis};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, pool, tag, seed] = args.as_slice() else {
        eprintln!("usage: kipam-crash-child DIR POOL TAG SEED");
        return ExitCode::from(2);
    };
    let Ok(seed) = seed.parse::<u64>() else {
        eprintln!("SEED must be a number");
        return ExitCode::from(2);
    };
    let store = match SqliteStore::open(&PathBuf::from(dir), &SqliteOptions::default()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("open: {e}");
            return ExitCode::from(1);
        }
    };
    let ipam = IpamStore::new(store);
    let mut rng = Rng::new(seed);
    let mut held: Vec<String> = Vec::new();
    let mut out = std::io::stdout().lock();
    for n in 0u64.. {
        let step = if !held.is_empty() && rng.range(0, 4) == 0 {
            let i = rng.range(0, held.len() as u64) as usize;
            let h = held.swap_remove(i);
            if writeln!(out, "RELEASING {h}")
                .and_then(|()| out.flush())
                .is_err()
            {
                return ExitCode::SUCCESS;
            }
            ipam.release(&h, now_millis()).map(|_| format!("REL {h}"))
        } else {
            let h = format!("{tag}-{n}");
            let req = AllocRequest {
                handle: h.clone(),
                node: format!("node-{}", rng.range(0, 3)),
                attrs: BTreeMap::new(),
                wants: vec![Want {
                    source: Source::Pools(vec![pool.clone()]),
                    addr: None,
                }],
            };
            ipam.allocate(&req, now_millis()).map(|got| {
                held.push(h.clone());
                let addrs: Vec<String> = got.iter().map(|a| a.addr.to_string()).collect();
                format!("OK {h} {}", addrs.join(","))
            })
        };
        match step {
            Ok(line) => {
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                eprintln!("step {n}: {e}");
                return ExitCode::from(1);
            }
        }
    }
    ExitCode::SUCCESS
}
