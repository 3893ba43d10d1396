//! kipamd's life: readiness before the store is loaded, state kept across restarts, and
//! a graceful SIGTERM that finishes the request in flight and exits 0.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{Daemon, pool};
use kipam_api::allocations::AllocateRequest;

#[test]
fn sigterm_finishes_the_request_in_flight_and_exits_0() {
    let mut d = Daemon::start(&[]);
    let body = serde_json::to_vec(&pool("inflight", "10.5.0.0/24")).unwrap();
    let mut s = TcpStream::connect(&d.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Headers and half the body, then the signal, then the rest.
    let head = format!(
        "POST /v1/pools HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&body[..body.len() / 2]).unwrap();
    s.flush().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    // No new connections are taken once it stops accepting.
    s.write_all(&body[body.len() / 2..]).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{:?}", d.log());
    assert!(!d.socket().exists(), "the socket is removed at exit");
    assert!(d.log().iter().any(|l| l.contains("kipamd stopped")));

    // The pool created by the in-flight request is durable.
    let dir = std::mem::replace(&mut d.dir, common::TempDir::new("unused"));
    let d2 = Daemon::start_in(dir, &[]);
    assert_eq!(
        d2.client().get_pool("inflight").unwrap().config.name,
        "inflight"
    );
}

#[test]
fn sigint_also_stops_gracefully() {
    let mut d = Daemon::start(&[]);
    d.signal("INT");
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
}

#[test]
fn state_survives_a_restart() {
    let mut d = Daemon::start(&[]);
    let c = d.client();
    c.create_pool(&pool("keep", "10.6.0.0/24")).unwrap();
    let a = c
        .allocate(&AllocateRequest::from_pools("net/k/eth0", "n1", &["keep"]))
        .unwrap();
    d.signal("TERM");
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0));
    let dir = std::mem::replace(&mut d.dir, common::TempDir::new("unused"));
    let d2 = Daemon::start_in(dir, &[]);
    let c = d2.client();
    assert_eq!(
        c.get_allocation("net/k/eth0").unwrap().addresses,
        a.addresses
    );
    let hist = c.address(a.addresses[0].address, None).unwrap().history;
    assert_eq!(hist.len(), 1);
}

#[test]
fn not_ready_is_503_in_the_error_shape() {
    // The router without a loaded engine, served in-process: what clients see while
    // kipamd loads a large store.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let addr = rt.block_on(async {
        let metrics = std::sync::Arc::new(kipam_server::metrics::Metrics::new());
        let state = kipam_server::state::AppState::new(
            kipam_server::auth::AuthMode::LoopbackTrusted,
            metrics,
            Duration::from_secs(60),
        );
        let config = kipam_server::config::Config::with_data(std::path::Path::new("/nonexistent"));
        let app = kipam_server::routes::router(state, &config);
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    });
    let c = kipam_api::client::Client::new(kipam_api::client::Endpoint::Tcp(addr.to_string()));
    let handle = std::thread::spawn(move || {
        c.health().unwrap();
        let e = c.ready().unwrap_err();
        assert_eq!(e.status(), Some(503));
        assert_eq!(e.code(), Some(kipam_api::ErrorCode::Unavailable));
        assert_eq!(c.list_pools().unwrap_err().status(), Some(503));
        assert_eq!(
            c.allocate(&AllocateRequest::from_pools("h", "n", &["p"]))
                .unwrap_err()
                .status(),
            Some(503)
        );
        let m = c.raw("GET", "/metrics", &[], None).unwrap();
        assert_eq!(m.status, 200);
        assert!(String::from_utf8(m.body).unwrap().contains("kipam_ready 0"));
    });
    handle.join().unwrap();
    rt.shutdown_background();
}
