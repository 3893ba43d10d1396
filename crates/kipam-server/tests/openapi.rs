//! The OpenAPI document: the checked-in `docs/openapi.json` must equal what kipamd serves
//! (regenerate with `KIPAM_UPDATE_OPENAPI=1 cargo test -p kipam-server --test openapi`),
//! and schemathesis, run against a live kipamd with that document, must find no 5xx and
//! no response that violates it.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Daemon, skip};
use std::path::PathBuf;
use std::process::Command;

fn checked_in() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn openapi_document_is_current() {
    let doc = kipam_server::openapi::document();
    let path = checked_in();
    if std::env::var_os("KIPAM_UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &doc).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == doc,
        "docs/openapi.json is stale; regenerate it with KIPAM_UPDATE_OPENAPI=1 cargo test -p kipam-server --test openapi"
    );
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(v["openapi"].as_str().unwrap().starts_with("3."));
    for route in [
        "/v1/pools",
        "/v1/pools/{name}",
        "/v1/allocations",
        "/v1/allocations/{handle}",
        "/v1/addresses/{ip}",
        "/v1/prefixes",
        "/v1/external-networks",
        "/v1/overlaps",
        "/v1/usage",
        "/v1/plan",
        "/v1/pools/{name}/forecast",
        "/v1/gc",
        "/healthz",
        "/readyz",
    ] {
        assert!(v["paths"][route].is_object(), "{route} missing");
    }
}

#[test]
fn served_document_equals_the_checked_in_one() {
    let d = Daemon::start(&[]);
    let r = d
        .client()
        .raw("GET", "/v1/openapi.json", &[], None)
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        String::from_utf8(r.body).unwrap(),
        kipam_server::openapi::document()
    );
}

fn schemathesis() -> Option<PathBuf> {
    let out = Command::new("schemathesis")
        .arg("--version")
        .output()
        .ok()?;
    out.status.success().then(|| PathBuf::from("schemathesis"))
}

#[test]
fn schemathesis_finds_no_server_errors_and_no_schema_violations() {
    let Some(st) = schemathesis() else {
        skip(
            "schemathesis_finds_no_server_errors_and_no_schema_violations",
            "schemathesis is not installed (pip install schemathesis; .ci/run installs it)",
        );
        return;
    };
    let d = Daemon::start(&[]);
    let base = format!("http://{}", d.addr);
    let out = Command::new(st)
        .args(["run", &checked_in().display().to_string()])
        .args(["--url", &base])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--max-examples", "25"])
        .args(["--exclude-path", "/metrics"])
        .args(["--request-timeout", "10"])
        .args(["--generation-database", "none"])
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        // Its caches go to the throwaway directory, not the work tree.
        .current_dir(d.dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{stdout}\n{stderr}\nkipamd log:\n{}",
        d.log().join("\n")
    );
    // kipamd must still be healthy afterwards.
    d.client().health().unwrap();
}
