//! `KIPAM_TRACE=1`: phase timings of one exec on stderr, for finding where an exec's time
//! goes (docs/BENCHMARKS.md shows a breakdown made with it).
//!
//! Off unless the variable is set; when off, a mark costs one check of a cached flag.
//! Each line is `kipam trace: <phase> +<µs since the previous mark> =<µs since the first>`.
//! stderr is the plugin's log channel, so the result JSON on stdout is unaffected.

use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The first and the previous mark of this process.
type Marks = Mutex<Option<(Instant, Instant)>>;

/// The marks so far, or `None` when tracing is off.
fn state() -> Option<&'static Marks> {
    static STATE: OnceLock<Option<Marks>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            std::env::var_os("KIPAM_TRACE")
                .filter(|v| !v.is_empty() && v != "0")
                .map(|_| Mutex::new(None))
        })
        .as_ref()
}

/// Records that `phase` just ended.
pub fn mark(phase: &str) {
    let Some(state) = state() else { return };
    let now = Instant::now();
    let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
    let (first, prev) = s.unwrap_or((now, now));
    eprintln!(
        "kipam trace: {phase} +{}µs ={}µs",
        now.duration_since(prev).as_micros(),
        now.duration_since(first).as_micros()
    );
    *s = Some((first, now));
}
