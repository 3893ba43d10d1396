//! Multi-process test child: `kipam-counter-child DIR N` opens the SQLite store in DIR
//! afresh N times (like one CNI exec per ADD) and increments the key `counter` in a
//! read-modify-write transaction each time. Exits non-zero on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use kipam_store::{SqliteOptions, SqliteStore, StoreError, transact};

fn increment(store: &SqliteStore) -> Result<(), StoreError> {
    transact(store, |txn| {
        let current =
            match txn.get("counter")? {
                Some(record) => {
                    let bytes: [u8; 8] = record.value.as_slice().try_into().map_err(|_| {
                        StoreError::Inconsistent {
                            path: PathBuf::new(),
                            detail: "counter is not 8 bytes".into(),
                        }
                    })?;
                    u64::from_be_bytes(bytes)
                }
                None => 0,
            };
        txn.put("counter", (current + 1).to_be_bytes().to_vec())
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, n] = args.as_slice() else {
        eprintln!("usage: kipam-counter-child DIR N");
        return ExitCode::from(2);
    };
    let Ok(n) = n.parse::<u64>() else {
        eprintln!("N must be a number");
        return ExitCode::from(2);
    };
    for _ in 0..n {
        let opts = SqliteOptions {
            create_dir: true,
            ..SqliteOptions::default()
        };
        let result = SqliteStore::open(&PathBuf::from(dir), &opts).and_then(|s| increment(&s));
        if let Err(e) = result {
            eprintln!("increment: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
