//! The dashboard in a real browser: the real kipamd with pools, allocations, an external
//! network that overlaps a pool and pending reclaims, and Debian's headless Chromium
//! loading `GET /`, running the page's script against the live API, and dumping the
//! resulting DOM (and a screenshot). The assertions read what a person would see: pool
//! names, the percentages `/v1/usage` reports, the at-risk marker on the right pool, the
//! overlap line, the count of pending reclaims.
//!
//! Needs `/usr/bin/chromium` (Debian package `chromium`); without it the tests say
//! SKIPPED (and fail under `KIPAM_REQUIRE_REAL=1`).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Daemon, TempDir, pool, skip};
use kipam_api::allocations::AllocateRequest;
use kipam_api::gc::GcRequest;
use kipam_core::ScopeNetwork;

const CHROMIUM: &str = "/usr/bin/chromium";

/// Chromium's path, or None after reporting the test as skipped.
fn chromium(test: &str) -> Option<&'static Path> {
    let p = Path::new(CHROMIUM);
    if p.exists() {
        Some(p)
    } else {
        skip(
            test,
            "no /usr/bin/chromium (apt-get install chromium) to render the dashboard",
        );
        None
    }
}

/// Runs headless Chromium on `url` with `args` (a fresh profile in `dir`); returns stdout.
/// The virtual time budget lets the page's script fetch and render before the dump.
fn run_chromium(browser: &Path, dir: &Path, url: &str, args: &[&str]) -> String {
    let profile = dir.join(format!("profile-{}", args.len()));
    std::fs::create_dir_all(&profile).unwrap();
    let stdout = dir.join("chromium.out");
    let stderr = dir.join("chromium.err");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium did not finish within 90 s: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&profile);
    assert!(
        status.success(),
        "chromium failed ({status}): {}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    std::fs::read_to_string(&stdout).unwrap()
}

/// The visible text of an HTML fragment: scripts, styles and tags dropped, the usual
/// entities decoded, whitespace collapsed.
fn text_of(html: &str) -> String {
    let mut html = html.to_string();
    for (open, close) in [("<script", "</script>"), ("<style", "</style>")] {
        while let Some(start) = html.find(open) {
            let end = html[start..]
                .find(close)
                .map_or(html.len(), |e| start + e + close.len());
            html.replace_range(start..end, " ");
        }
    }
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                out.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The HTML of the table row marked `data-pool="{pool}"` (up to the next row).
fn pool_row<'a>(dom: &'a str, pool: &str) -> &'a str {
    let marker = format!("data-pool=\"{pool}\"");
    dom.split("<tr")
        .find(|row| row.contains(&marker))
        .unwrap_or_else(|| panic!("no row for pool {pool} in the dashboard:\n{dom}"))
}

/// The text of the element with `id` (its first text run).
fn by_id<'a>(dom: &'a str, id: &str) -> &'a str {
    let open = format!("id=\"{id}\"");
    let rest = dom
        .split_once(&open)
        .unwrap_or_else(|| panic!("no #{id} in the dashboard"))
        .1;
    let rest = &rest[rest.find('>').unwrap() + 1..];
    &rest[..rest.find('<').unwrap()]
}

/// Where the screenshot is kept (outside the daemon's directory, which is removed).
fn screenshot_dir() -> PathBuf {
    let d = std::env::temp_dir().join("kipam-dashboard-test");
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn dashboard_renders_pools_risk_overlaps_and_reclaims() {
    let test = "dashboard_renders_pools_risk_overlaps_and_reclaims";
    let Some(browser) = chromium(test) else {
        return;
    };
    let d = Daemon::start(&[]);
    let c = d.client();

    // pods-hot: a /26 of /28 blocks, 62 usable addresses, 52 held: 83.9% > 80%, at risk.
    let mut hot = pool("pods-hot", "10.10.0.0/26");
    hot.block_prefix_length = Some(28);
    c.create_pool(&hot).unwrap();
    // pods-cool: a /24, a few held, 9 of them reported stale by worker-3 (pending reclaim).
    c.create_pool(&pool("pods-cool", "10.20.0.0/24")).unwrap();
    // pods-v6: a /64, to show counts beyond 2^53.
    c.create_pool(&pool("pods-v6", "fd00:10::/64")).unwrap();
    for i in 0..52_u32 {
        let node = if i.is_multiple_of(2) {
            "worker-1"
        } else {
            "worker-2"
        };
        c.allocate(&AllocateRequest::from_pools(
            &format!("net1/hot{i}/eth0"),
            node,
            &["pods-hot"],
        ))
        .unwrap();
    }
    for i in 0..12 {
        c.allocate(&AllocateRequest::from_pools(
            &format!("stale/cool{i}/eth0"),
            "worker-3",
            &["pods-cool", "pods-v6"],
        ))
        .unwrap();
    }
    let gc = c
        .gc(&GcRequest {
            node: Some("worker-3".into()),
            network: Some("stale".into()),
            valid: (0..3).map(|i| format!("stale/cool{i}/eth0")).collect(),
            grace_seconds: Some(3600),
        })
        .unwrap();
    assert_eq!(gc.pending.len(), 9);
    c.add_external_network(&ScopeNetwork {
        name: "office-vpn".into(),
        cidr: "10.20.0.128/25".parse().unwrap(),
        scope: "default".into(),
        description: "site A".into(),
    })
    .unwrap();

    let usage = c.usage().unwrap();
    assert_eq!(c.overlaps().unwrap().items.len(), 1);

    // The page runs only its own script and talks only to this kipamd; the browser
    // below enforces it, so a page that renders proves the script's hash is right.
    let page = c.raw("GET", "/", &[], None).unwrap();
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");

    let dir = TempDir::new("dashboard");
    let url = format!("http://{}/", d.addr);
    let dom = run_chromium(browser, dir.path(), &url, &["--dump-dom"]);
    let text = text_of(&dom);

    for p in &usage.pools {
        let row = pool_row(&dom, &p.pool);
        let row_text = text_of(&format!("<tr{row}"));
        assert!(row_text.contains(&p.cidr), "{}: {row_text}", p.pool);
        // The % used shown is /v1/usage's percentUsed (rounded for display).
        let shown = row
            .split("class=\"num pct\"")
            .nth(1)
            .and_then(|r| r.split_once('>'))
            .map(|(_, r)| &r[..r.find('<').unwrap()])
            .unwrap_or_else(|| panic!("no % cell for {}: {row}", p.pool));
        let pct: f64 = shown
            .trim_start_matches("&lt;")
            .trim_end_matches('%')
            .parse()
            .unwrap();
        let tolerance = if p.counts.percent_used < 1.0 {
            0.01
        } else {
            0.05
        };
        assert!(
            (pct - p.counts.percent_used).abs() <= tolerance,
            "{}: shows {shown}, /v1/usage says {}",
            p.pool,
            p.counts.percent_used
        );
        // The bar says the same to a screen reader.
        assert!(row.contains("role=\"img\" aria-label=\""), "{row}");
        let at_risk = p.at_risk.is_some();
        assert_eq!(
            row_text.contains("at risk"),
            at_risk,
            "{}: {row_text}",
            p.pool
        );
        if let Some(r) = &p.at_risk {
            assert!(row_text.contains(&r.message), "{}: {row_text}", p.pool);
        }
    }
    let hot = usage.pools.iter().find(|p| p.pool == "pods-hot").unwrap();
    assert!(
        hot.counts.percent_used > 80.0,
        "{}",
        hot.counts.percent_used
    );
    assert!(pool_row(&dom, "pods-hot").contains("data-risk=\"high-usage\""));
    assert!(!pool_row(&dom, "pods-cool").contains("data-risk="));
    // IPv6 sizes beyond 2^53: a power of two as 2^k, the rest in scientific notation.
    let v6 = pool_row(&dom, "pods-v6");
    assert!(v6.contains("2<sup>64</sup>"), "{v6}");
    assert!(text_of(v6).contains("1.8e19"), "{}", text_of(v6));

    assert!(
        text.contains("pool pods-cool overlaps external network office-vpn (10.20.0.128/25)"),
        "{text}"
    );
    assert_eq!(by_id(&dom, "sum-pools"), "3");
    assert_eq!(by_id(&dom, "sum-risk"), "1");
    assert_eq!(by_id(&dom, "sum-overlaps"), "1");
    assert_eq!(by_id(&dom, "gc-count"), "9");
    assert_eq!(by_id(&dom, "sum-nodes"), "3");
    let held: u64 = usage.pools.iter().map(|p| p.counts.held).sum();
    assert!(text.contains(&format!("{held} addresses held")), "{text}");
    assert!(text.contains("as of "), "{text}");
    assert!(by_id(&dom, "conn").contains("live"), "{text}");
    assert!(!text.contains("Cannot reach"), "{text}");

    let shot = screenshot_dir().join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let arg = format!("--screenshot={}", shot.display());
    run_chromium(browser, dir.path(), &url, &[&arg, "--window-size=1280,900"]);
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    println!("dashboard screenshot: {} ({size} bytes)", shot.display());
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(size > 20_000, "screenshot suspiciously small: {size} bytes");
}

#[test]
fn dashboard_asks_for_a_token_when_kipamd_needs_one() {
    let test = "dashboard_asks_for_a_token_when_kipamd_needs_one";
    let Some(browser) = chromium(test) else {
        return;
    };
    let dir = TempDir::new("dashboard-token");
    let tokens = dir.path().join("tokens");
    // A token nobody holds: every API call the page makes is refused with 401.
    std::fs::write(&tokens, format!("viewer {} wall\n", "0".repeat(64))).unwrap();
    let d = Daemon::start(&["--tokens", tokens.to_str().unwrap()]);
    let dom = run_chromium(
        browser,
        dir.path(),
        &format!("http://{}/", d.addr),
        &["--dump-dom"],
    );
    let form = dom
        .split("<form")
        .nth(1)
        .unwrap_or_else(|| panic!("no token form:\n{dom}"));
    let form_tag = &form[..form.find('>').unwrap()];
    assert!(
        !form_tag.contains("hidden"),
        "token form not shown: {form_tag}"
    );
    let text = text_of(&dom);
    assert!(text.contains("needs a token"), "{text}");
    assert!(text.contains("kipamd asks for a token"), "{text}");
    assert_eq!(by_id(&dom, "conn"), "token needed");
}
