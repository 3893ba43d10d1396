//! Test-only and bench-only programs and helpers for kipam; never shipped (`publish = false`).
//!
//! Crash tests need a real process to kill with SIGKILL, and the CNI benchmark needs a
//! driver that execs plugins as a runtime does. Keeping these programs in a crate of their
//! own keeps test-only binaries out of the crates that ship.
//!
//! - `kipam-crash-child` (src/bin): allocates and releases in a loop against a SQLite
//!   store and prints each committed step, so the parent knows what must survive a kill.
//! - `kipam-cni-bench` (src/bin): execs the `kipam` and `host-local` CNI plugins once per
//!   call and prints ADD/DEL latency percentiles and their ratio (run it through
//!   `bench/cni-vs-host-local.sh`).
//! - `kipamd-bench` (src/bin): concurrent clients against a real kipamd over TCP and the
//!   unix socket, then 1,000,000 allocations and a restart (run it through
//!   `bench/kipamd.sh`).
//! - `kipam-counter-child` (src/bin): a child for the many-processes store test.
//! - Here: [`Rng`] for tests and [`bench_main`], the shared `main` of the bench programs.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the bench programs: they only report them, so one boxed type is enough.
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The `main` of a bench program: `--help` prints `usage`; arguments that do not parse
/// print the error and `usage` and exit 2; a failed run prints its error and exits 1.
pub fn bench_main<O>(
    name: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<O, BenchError>,
    run: impl FnOnce(&O) -> Result<(), BenchError>,
) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return ExitCode::SUCCESS;
    }
    let opts = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{name}: {e}\n{usage}");
            return ExitCode::from(2);
        }
    };
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A tiny xorshift generator: test randomness without a dependency. The seed is printed
/// by tests so a failure can be replayed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (0 is replaced by a fixed odd constant).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// A seed from the clock.
    pub fn seed_from_clock() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo).max(1)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
