//! Concurrent clients: N threads, each with kipamd's blocking client (one connection per
//! request, as the CNI plugin and kipamctl use it), allocating or releasing as fast as
//! kipamd answers. Every answer is a durable one: kipamd replies only after the group
//! commit holding the request is fsynced.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kipam_api::allocations::AllocateRequest;
use kipam_api::client::Client;

use crate::Result;

/// The pool every run allocates from.
pub const POOL: &str = "bench";

/// What a phase of one run measured.
#[derive(Debug, Default, Clone)]
pub struct Phase {
    /// Requests answered with success.
    pub ok: u64,
    /// Wall time of the phase.
    pub wall: Duration,
    /// Latency of every successful request.
    pub latencies: Vec<Duration>,
}

impl Phase {
    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// How long or how much each client allocates.
#[derive(Debug, Clone, Copy)]
pub enum Amount {
    /// For this long.
    For(Duration),
    /// This many allocations per client.
    Each(u64),
}

/// What one allocating client hands back: its latencies and its handles, or why it stopped.
type ClientOutcome = Result<(Vec<Duration>, Vec<String>), String>;

fn handle(tag: &str, client: usize, k: u64) -> String {
    format!("bench/{tag}/{client}/{k}")
}

/// N clients allocate (`Amount`) for handles `bench/{tag}/{client}/{k}`; returns the phase
/// and every client's handles. The first failure stops the run and is returned.
pub fn allocate(
    clients: &[Client],
    tag: &str,
    amount: Amount,
    progress: Option<&AtomicU64>,
) -> Result<(Phase, Vec<Vec<String>>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let outcomes: Vec<ClientOutcome> = std::thread::scope(|s| {
        let threads: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let stop = stop.clone();
                s.spawn(move || {
                    let node = format!("node-{}", i % 64);
                    let mut lat = Vec::new();
                    let mut handles = Vec::new();
                    let mut k = 0u64;
                    loop {
                        let more = match amount {
                            Amount::For(d) => started.elapsed() < d,
                            Amount::Each(n) => k < n,
                        };
                        if !more || stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let h = handle(tag, i, k);
                        k += 1;
                        let req = AllocateRequest::from_pools(&h, &node, &[POOL]);
                        let t0 = Instant::now();
                        if let Err(e) = c.allocate(&req) {
                            stop.store(true, Ordering::Relaxed);
                            return Err(format!("allocate {h}: {e}"));
                        }
                        lat.push(t0.elapsed());
                        handles.push(h);
                        if let Some(p) = progress {
                            p.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Ok((lat, handles))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect()
    });
    let wall = started.elapsed();
    let mut phase = Phase {
        wall,
        ..Phase::default()
    };
    let mut all = Vec::new();
    for o in outcomes {
        let (lat, handles) = o?;
        phase.ok += lat.len() as u64;
        phase.latencies.extend(lat);
        all.push(handles);
    }
    Ok((phase, all))
}

/// Each client releases its own handles.
pub fn release(clients: &[Client], handles: &[Vec<String>]) -> Result<Phase> {
    let started = Instant::now();
    let outcomes: Vec<Result<Vec<Duration>, String>> = std::thread::scope(|s| {
        let threads: Vec<_> = clients
            .iter()
            .zip(handles)
            .map(|(c, hs)| {
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(hs.len());
                    for h in hs {
                        let t0 = Instant::now();
                        match c.release(h) {
                            Ok(r) if r.released.len() == 1 => lat.push(t0.elapsed()),
                            Ok(r) => {
                                return Err(format!("release {h} released {:?}", r.released));
                            }
                            Err(e) => return Err(format!("release {h}: {e}")),
                        }
                    }
                    Ok(lat)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap_or_else(|_| Err("a client panicked".into())))
            .collect()
    });
    let mut phase = Phase {
        wall: started.elapsed(),
        ..Phase::default()
    };
    for o in outcomes {
        let lat = o?;
        phase.ok += lat.len() as u64;
        phase.latencies.extend(lat);
    }
    Ok(phase)
}
