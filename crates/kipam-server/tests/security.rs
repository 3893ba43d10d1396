//! Every refusal of kipamd's security model, proven against the real binary: tokens and
//! roles on TCP, the 0600 unix socket trusted as allocator, loopback-only without tokens,
//! the body limit, and `kipamd hash-token`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{Daemon, TempDir, pool, run_to_exit};
use kipam_api::allocations::AllocateRequest;
use kipam_api::client::ClientError;

fn hash_line(role: &str, token: &str, name: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kipamd"))
        .args(["hash-token", "--role", role, "--name", name])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{token}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        !line.contains(token),
        "the line must not hold the token itself"
    );
    line
}

fn status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> u16 {
    match r {
        Err(e) => e.status().unwrap_or_else(|| panic!("no status: {e:?}")),
        Ok(v) => panic!("expected a refusal, got {v:?}"),
    }
}

fn with_tokens() -> Daemon {
    let dir = TempDir::new("sec");
    let tokens = dir.path().join("tokens");
    let text = format!(
        "# kipamd tokens\n{}\n{}\n{}\n",
        hash_line("viewer", "view-token", "dashboards"),
        hash_line("allocator", "alloc-token", "cni"),
        hash_line("admin", "admin-token", "ops"),
    );
    std::fs::write(&tokens, text).unwrap();
    let tokens = tokens.display().to_string();
    Daemon::start_in(dir, &["--tokens", &tokens])
}

#[test]
fn tokens_and_roles_on_tcp() {
    let d = with_tokens();
    let anon = d.client();
    let viewer = d.client().with_token("view-token");
    let allocator = d.client().with_token("alloc-token");
    let admin = d.client().with_token("admin-token");
    let wrong = d.client().with_token("nope");

    // Public: health, readiness, the OpenAPI document, the dashboard shell.
    anon.health().unwrap();
    anon.ready().unwrap();
    assert_eq!(
        anon.raw("GET", "/v1/openapi.json", &[], None)
            .unwrap()
            .status,
        200
    );
    assert_eq!(anon.raw("GET", "/", &[], None).unwrap().status, 200);

    // No token / wrong token: 401 on everything else.
    assert_eq!(status(anon.list_pools()), 401);
    assert_eq!(status(wrong.list_pools()), 401);
    assert_eq!(anon.raw("GET", "/metrics", &[], None).unwrap().status, 401);
    let r = anon
        .raw(
            "GET",
            "/v1/pools",
            &[("Authorization", "Basic dXNlcjpwdw==")],
            None,
        )
        .unwrap();
    assert_eq!(r.status, 401);
    let body: kipam_api::ErrorBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.error.code, kipam_api::ErrorCode::Unauthenticated);

    // Viewer reads, may not mutate.
    viewer.list_pools().unwrap();
    assert_eq!(
        viewer.raw("GET", "/metrics", &[], None).unwrap().status,
        200
    );
    assert_eq!(status(viewer.create_pool(&pool("p", "10.0.0.0/24"))), 403);
    assert_eq!(
        status(viewer.allocate(&AllocateRequest::from_pools("h", "n", &["p"]))),
        403
    );
    assert_eq!(status(viewer.release("h")), 403);

    // Allocator allocates, may not manage pools.
    assert_eq!(
        status(allocator.create_pool(&pool("p", "10.0.0.0/24"))),
        403
    );
    admin.create_pool(&pool("p", "10.0.0.0/24")).unwrap();
    allocator
        .allocate(&AllocateRequest::from_pools("h", "n", &["p"]))
        .unwrap();
    allocator.release("h").unwrap();
    assert_eq!(status(allocator.delete_pool("p", false)), 403);
    let body = match allocator.delete_pool("p", false) {
        Err(ClientError::Status { body: Some(b), .. }) => b,
        other => panic!("{other:?}"),
    };
    assert_eq!(body.error.code, kipam_api::ErrorCode::PermissionDenied);
    assert!(
        body.error.message.contains("admin"),
        "{}",
        body.error.message
    );
    admin.delete_pool("p", false).unwrap();
}

#[test]
fn unix_socket_is_0600_and_trusted_as_allocator() {
    let d = with_tokens();
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    d.client()
        .with_token("admin-token")
        .create_pool(&pool("s", "10.1.0.0/24"))
        .unwrap();
    let sock = d.socket_client();
    sock.list_pools().unwrap();
    let a = sock
        .allocate(&AllocateRequest::from_pools("net/x/eth0", "n", &["s"]))
        .unwrap();
    assert_eq!(a.addresses.len(), 1);
    sock.release("net/x/eth0").unwrap();
    // Allocator, not admin.
    assert_eq!(status(sock.create_pool(&pool("t", "10.2.0.0/24"))), 403);
    // An admin token over the socket raises it; a wrong one is refused.
    sock.clone()
        .with_token("admin-token")
        .create_pool(&pool("t", "10.2.0.0/24"))
        .unwrap();
    assert_eq!(status(sock.clone().with_token("wrong").list_pools()), 401);
}

#[test]
fn without_tokens_loopback_is_admin_and_open_addresses_are_refused() {
    let d = Daemon::start(&[]);
    d.client().create_pool(&pool("x", "10.3.0.0/24")).unwrap();
    drop(d);
    let dir = TempDir::new("open");
    let data = dir.path().display().to_string();
    let (code, err) = run_to_exit(&["--data", &data, "--listen", "0.0.0.0:0"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("without --tokens"), "{err}");
    let (code, err) = run_to_exit(&[
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        "/nonexistent/tokens",
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("tokens"), "{err}");
    let bad = dir.path().join("bad-tokens");
    std::fs::write(&bad, "superuser 1234\n").unwrap();
    let (code, err) = run_to_exit(&[
        "--data",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--tokens",
        &bad.display().to_string(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = TempDir::new("stale");
    let sock = dir.path().join("kipamd.sock");
    // A socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    let d = Daemon::start_in(dir, &[]);
    d.socket_client().list_pools().unwrap();
    // A second daemon on the same socket is refused.
    let data2 = TempDir::new("stale2");
    let (code, err) = run_to_exit(&[
        "--data",
        &data2.path().display().to_string(),
        "--listen",
        "127.0.0.1:0",
        "--socket",
        &d.socket().display().to_string(),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("in use"), "{err}");
    d.socket_client().list_pools().unwrap();
}

#[test]
fn oversized_body_is_413_before_auth_cost() {
    let d = with_tokens();
    let admin = d.client().with_token("admin-token");
    let big = vec![b' '; 1024 * 1024 + 1];
    let r = admin
        .raw(
            "POST",
            "/v1/pools",
            &[("Content-Type", "application/json")],
            Some(&big),
        )
        .unwrap();
    assert_eq!(r.status, 413);
    let body: kipam_api::ErrorBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body.error.code, kipam_api::ErrorCode::PayloadTooLarge);
}

#[test]
fn hash_token_refuses_bad_input() {
    let out = Command::new(env!("CARGO_BIN_EXE_kipamd"))
        .args(["hash-token", "--role", "root"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(env!("CARGO_BIN_EXE_kipamd"))
        .args(["hash-token"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "an empty token is refused");
    let line = hash_line("admin", "abc", "me");
    assert_eq!(
        line,
        "admin ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad me"
    );
}
