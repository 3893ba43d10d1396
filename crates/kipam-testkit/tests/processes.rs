//! Many processes on one SQLite file: separate processes, each opening the store afresh
//! for every increment (as CNI execs do), lose no update.

use std::process::Command;

use kipam_store::{SqliteOptions, SqliteStore, Store};

const CHILD: &str = env!("CARGO_BIN_EXE_kipam-counter-child");

#[test]
fn separate_processes_lose_no_update() {
    const CHILDREN: u64 = 4;
    const INCREMENTS: u64 = 100;
    let dir = std::env::temp_dir().join(format!("kipam-procs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let children: Vec<_> = (0..CHILDREN)
        .map(|_| {
            Command::new(CHILD)
                .arg(&dir)
                .arg(INCREMENTS.to_string())
                .spawn()
                .expect("spawn the counter child")
        })
        .collect();
    for mut child in children {
        assert!(
            child.wait().expect("reap").success(),
            "a child process failed"
        );
    }
    let store = SqliteStore::open(&dir, &SqliteOptions::default()).expect("open");
    let record = store.get("counter").expect("read").expect("counter exists");
    let bytes: [u8; 8] = record.value.as_slice().try_into().expect("8-byte counter");
    assert_eq!(u64::from_be_bytes(bytes), CHILDREN * INCREMENTS);
    assert_eq!(
        store.current_revision().expect("revision"),
        CHILDREN * INCREMENTS
    );
    store.check_integrity().expect("SQLite integrity check");
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}
