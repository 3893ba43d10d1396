//! End-to-end tests of kipamctl: the real binary against a real kipamd (see
//! `common/mod.rs` for how kipamd is built and found), checking what a script sees —
//! exit codes, `-o json` documents, the words of tables and of error messages.
//!
//! Covered: the planner's seed scenario offline and on kipamd, three clusters from one
//! supernet, `plan --apply`, every subcommand's happy path, the main errors with their
//! exit codes (unreachable, bad token, unknown pool, invalid CIDR, overlap), the
//! forecast of a pool growing in real time (kipamd sampling every second), and the
//! at-risk marker and ETA metric that follow from it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Daemon, SEED_YAML, THREE_YAML, TempDir, ctl_at, ctl_stdin};
use kipam_api::allocations::AllocateRequest;
use serde_json::Value;

fn v4_of(plan: &Value, cluster: usize) -> &Value {
    &plan["clusters"][cluster]["families"][0]
}

#[test]
fn plan_seed_scenario_offline_and_on_kipamd() {
    let dir = TempDir::new("seed");
    let yaml = dir.file("seed.yaml", SEED_YAML);
    // Offline: no kipamd at this address, and none needed.
    let offline = ctl_at(
        "http://127.0.0.1:1",
        &["plan", "-f", yaml.to_str().unwrap(), "-o", "json"],
    )
    .json();
    let v4 = v4_of(&offline, 0);
    assert_eq!(v4["family"], "ipv4");
    assert_eq!(v4["pods"]["cidr"], "10.1.0.0/16");
    assert_eq!(v4["pods"]["nodeMask"], 24);
    assert_eq!(v4["pods"]["maxPods"], 28_160);
    assert_eq!(
        v4["services"]["cidr"].as_str().unwrap().split('/').nth(1),
        Some("20")
    );
    assert_eq!(v4["loadBalancers"]["capacity"], 128);
    let v6 = &offline["clusters"][0]["families"][1];
    assert_eq!(v6["pods"]["cidr"], "fd00::/56");
    assert_eq!(v6["pods"]["nodeMask"], 64);
    for r in [
        &v4["pods"]["cidr"],
        &v4["services"]["cidr"],
        &v4["loadBalancers"]["cidr"],
    ] {
        let r = r.as_str().unwrap();
        assert!(
            !r.starts_with("10.0.") && !r.starts_with("172."),
            "{r} touches an avoided network"
        );
    }

    // The same request as JSON plans the same.
    let req: Value = serde_norway::from_str(SEED_YAML).unwrap();
    let json = dir.file("seed.json", &req.to_string());
    let again = ctl_at(
        "http://127.0.0.1:1",
        &["plan", "-f", json.to_str().unwrap(), "-o", "json"],
    )
    .json();
    assert_eq!(again, offline);

    // On kipamd: the same answer.
    let d = Daemon::start(&[]);
    let remote = d
        .ctl(&[
            "plan",
            "-f",
            yaml.to_str().unwrap(),
            "--remote",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(remote, offline);

    // The human table explains the sizes.
    let text = d
        .ctl(&["plan", "-f", yaml.to_str().unwrap()])
        .ok()
        .to_string();
    assert!(
        text.contains("cluster prod (headroom policy 50%)"),
        "{text}"
    );
    assert!(
        text.contains("node mask /24: 256 nodes × 110 pods = 28,160 pods"),
        "{text}"
    );
    assert!(
        text.contains("why: 10,000 pods at 110 per node need 91 nodes"),
        "{text}"
    );
}

#[test]
fn plan_refusals_say_what_would_fit() {
    let r = ctl_at(
        "http://127.0.0.1:1",
        &[
            "plan",
            "--cluster",
            "huge",
            "--nodes",
            "5000",
            "--supernet",
            "10.0.0.0/16",
        ],
    );
    r.fails(7, &["needs a /", "largest free block", "hint:"]);
    let d = Daemon::start(&[]);
    let r = d.ctl(&[
        "plan",
        "--cluster",
        "huge",
        "--nodes",
        "5000",
        "--supernet",
        "10.0.0.0/16",
        "--remote",
    ]);
    r.fails(7, &["infeasible", "needs a /"]);
    let raw = d
        .client()
        .raw(
            "POST",
            "/v1/plan",
            &[("Content-Type", "application/json")],
            Some(br#"{"clusters":[{"name":"huge","nodes":5000}],"supernets":["10.0.0.0/16"]}"#),
        )
        .unwrap();
    assert_eq!(raw.status, 422);
    let body: Value = serde_json::from_slice(&raw.body).unwrap();
    assert_eq!(body["error"]["code"], "infeasible");
    assert_eq!(body["error"]["details"]["kind"], "does-not-fit");
    assert!(
        body["error"]["details"]["largestFree"].is_string(),
        "{body}"
    );
    // Nothing to plan is a usage error, offline too.
    ctl_at("http://127.0.0.1:1", &["plan"]).fails(2, &["nothing to plan"]);
}

#[test]
fn three_clusters_from_one_supernet_overlap_nothing() {
    let dir = TempDir::new("three");
    let yaml = dir.file("three.yaml", THREE_YAML);
    let plan = ctl_at(
        "http://127.0.0.1:1",
        &["plan", "-f", yaml.to_str().unwrap(), "-o", "json"],
    )
    .json();
    let names: Vec<&str> = plan["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["small", "large", "edge"]);
    // Every planned range and the avoided office network into one inventory: the offline
    // overlap check must find nothing.
    let mut pools = Vec::new();
    for c in plan["clusters"].as_array().unwrap() {
        for f in c["families"].as_array().unwrap() {
            for (k, r) in [
                ("pods", &f["pods"]),
                ("services", &f["services"]),
                ("lb", &f["loadBalancers"]),
            ] {
                if let Some(cidr) = r["cidr"].as_str() {
                    assert!(cidr.starts_with("10."), "{cidr}");
                    pools.push(serde_json::json!({"name": format!("{}-{k}", c["name"].as_str().unwrap()), "cidr": cidr}));
                }
            }
        }
    }
    assert_eq!(pools.len(), 8);
    let inv = serde_json::json!({"pools": pools, "externalNetworks": [{"name": "office", "cidr": "10.64.0.0/14"}]});
    let f = dir.file("inv.json", &inv.to_string());
    let r = ctl_at(
        "http://127.0.0.1:1",
        &["overlaps", "--file", f.to_str().unwrap()],
    );
    assert_eq!(r.ok().trim(), "no overlaps");
    // And an inventory with an overlap exits 5 and names both.
    let bad = dir.file(
        "bad.yaml",
        "pools: [{name: pods, cidr: 10.42.0.0/16}]\nexternalNetworks: [{name: lan, cidr: 10.42.3.0/24}]\n",
    );
    let r = ctl_at(
        "http://127.0.0.1:1",
        &["overlaps", "--file", bad.to_str().unwrap()],
    );
    assert_eq!(r.code, 5, "{r:#?}");
    assert!(
        r.stdout.contains("pool pods") && r.stdout.contains("external-network lan"),
        "{r:#?}"
    );
}

#[test]
fn plan_apply_creates_the_pools() {
    let dir = TempDir::new("apply");
    let yaml = dir.file("three.yaml", THREE_YAML);
    let d = Daemon::start(&[]);
    // Something already in the supernet: --apply must plan around it.
    d.ctl(&["external", "add", "lab", "10.80.0.0/16"]).ok();
    let applied = d
        .ctl(&[
            "plan",
            "-f",
            yaml.to_str().unwrap(),
            "--apply",
            "-o",
            "json",
        ])
        .json();
    let created: Vec<&str> = applied["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        [
            "small-pods-v4",
            "small-services-v4",
            "large-pods-v4",
            "large-services-v4",
            "large-lb-v4",
            "edge-pods-v4",
            "edge-services-v4",
            "edge-lb-v4"
        ]
    );
    let list = d.ctl(&["pool", "list", "-o", "json"]).json();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 8);
    for p in items {
        let name = p["config"]["name"].as_str().unwrap();
        let purpose = p["config"]["purpose"].as_str().unwrap();
        let want = if name.contains("-pods-") {
            "pod"
        } else if name.contains("-services-") {
            "service"
        } else {
            "load-balancer"
        };
        assert_eq!(purpose, want, "{name}");
        assert!(
            !p["config"]["cidr"].as_str().unwrap().starts_with("10.80."),
            "{p}"
        );
    }
    let large = items
        .iter()
        .find(|p| p["config"]["name"] == "large-pods-v4")
        .unwrap();
    assert_eq!(
        large["config"]["cidr"],
        applied["plan"]["clusters"][1]["families"][0]["pods"]["cidr"]
    );
    // Applying again plans around the pools now there: the supernet is too full.
    let r = d.ctl(&["plan", "-f", yaml.to_str().unwrap(), "--apply"]);
    r.fails(
        7,
        &[
            "the plan cannot be made: cluster \"large\"",
            "largest free block",
        ],
    );
    assert_eq!(
        r.stderr.matches("needs a /13").count(),
        1,
        "the cause once: {r:#?}"
    );
    // A plan that fits but whose pool names are taken: a conflict, nothing created.
    let edge = dir.file(
        "edge.yaml",
        "supernets: [10.64.0.0/12]\nclusters: [{name: edge, nodes: 4, services: 10}]\n",
    );
    let r = d.ctl(&["plan", "-f", edge.to_str().unwrap(), "--apply"]);
    r.fails(
        5,
        &["pool edge-pods-v4 exists already", "nothing was created"],
    );
    assert_eq!(
        d.ctl(&["pool", "list", "-o", "json"]).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn pools_end_to_end_with_errors_and_exit_codes() {
    let d = Daemon::start(&[]);
    let p = d
        .ctl(&[
            "pool",
            "create",
            "pods",
            "10.244.0.0/16",
            "--purpose",
            "pod",
            "--exclude",
            "10.244.255.0/24",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(p["config"]["purpose"], "pod");
    assert_eq!(p["config"]["exclusions"][0]["first"], "10.244.255.0");
    let shown = d.ctl(&["pool", "show", "pods"]).ok().to_string();
    assert!(
        shown.contains("cidr:") && shown.contains("10.244.0.0/16") && shown.contains("at risk:"),
        "{shown}"
    );
    let listed = d.ctl(&["pool", "list"]).ok().to_string();
    assert!(
        listed.starts_with("NAME") && listed.contains("[....................]  0.0%"),
        "{listed}"
    );
    let u = d
        .ctl(&["pool", "update", "pods", "--reuse-delay", "0", "-o", "json"])
        .json();
    assert_eq!(u["config"]["reuseDelaySeconds"], 0);
    d.ctl(&["pool", "update", "pods"])
        .fails(2, &["nothing to change"]);

    // Invalid CIDR: a usage error before anything is sent, with the fix.
    let r = d.ctl(&["pool", "create", "x", "10.244.1.0/16"]);
    r.fails(2, &["did you mean 10.244.0.0/16"]);
    d.ctl(&["pool", "create", "x", "10.0.0.300/24"])
        .fails(2, &["is not a CIDR"]);
    // Unknown pool: 6, and where to look.
    d.ctl(&["pool", "show", "nope"])
        .fails(6, &["nope", "kipamctl pool list"]);
    // Overlap: 5, naming the pool in the way.
    d.ctl(&["pool", "create", "other", "10.244.128.0/17"])
        .fails(5, &["pods", "hint:"]);
    // Delete.
    assert!(
        d.ctl(&["pool", "delete", "pods"])
            .ok()
            .contains("deleted pool pods")
    );
    d.ctl(&["pool", "delete", "pods"]).fails(6, &[]);
}

#[test]
fn allocations_whois_history_and_release() {
    let d = Daemon::start(&[]);
    d.ctl(&["pool", "create", "p4", "10.50.0.0/24", "--purpose", "pod"])
        .ok();
    d.ctl(&["pool", "create", "p6", "fd00:50::/120", "--purpose", "pod"])
        .ok();
    let a = d
        .ctl(&[
            "alloc",
            "net1/c1/eth0",
            "--family",
            "ipv4",
            "--family",
            "ipv6",
            "--purpose",
            "pod",
            "--node",
            "w1",
            "--attr",
            "team=x",
            "-o",
            "json",
        ])
        .json();
    let addrs: Vec<String> = a["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs.len(), 2);
    let text = d
        .ctl(&["alloc", "net1/c2/eth0", "--pool", "p4"])
        .ok()
        .to_string();
    assert!(
        text.contains("net1/c2/eth0") && text.contains("p4"),
        "{text}"
    );
    let ip = &addrs[0];
    let w = d.ctl(&["whois", ip, "-o", "json"]).json();
    assert_eq!(w["state"], "held");
    assert_eq!(w["holder"]["handle"], "net1/c1/eth0");
    let w = d.ctl(&["whois", ip]).ok().to_string();
    assert!(
        w.contains("handle:") && w.contains("net1/c1/eth0") && w.contains("team"),
        "{w}"
    );
    // Before it was allocated: nobody.
    let then = d
        .ctl(&["whois", ip, "--at", "1970-01-01T00:00:01Z"])
        .ok()
        .to_string();
    assert!(then.contains("nobody then"), "{then}");
    d.ctl(&["whois", "10.50.0.999"])
        .fails(2, &["is not an IP address"]);
    d.ctl(&["whois", ip, "--at", "yesterday"])
        .fails(2, &["is not a time"]);
    let r = d.ctl(&["release", "net1/c1/eth0"]).ok().to_string();
    assert!(r.contains("RELEASED") && r.contains(ip.as_str()), "{r}");
    let r = d.ctl(&["release", "net1/c1/eth0"]).ok().to_string();
    assert!(r.contains("held nothing"), "{r}");
    let h = d.ctl(&["history", ip]).ok().to_string();
    let events: Vec<&str> = h
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(events, ["allocate", "release"], "{h}");
    let h = d.ctl(&["history", ip, "-o", "json"]).json();
    assert_eq!(h.as_array().unwrap().len(), 2);
    d.ctl(&["alloc", "h"]).fails(2, &["say what to allocate"]);
    d.ctl(&["alloc", "h", "--pool", "nope"]).fails(6, &[]);
}

#[test]
fn leases_usage_gc_and_completions() {
    let d = Daemon::start(&[]);
    d.ctl(&[
        "pool",
        "create",
        "nodes",
        "10.60.0.0/16",
        "--purpose",
        "node-cidr",
    ])
    .ok();
    let l = d
        .ctl(&[
            "lease", "nodes", "--length", "24", "--owner", "node/w1", "-o", "json",
        ])
        .json();
    assert_eq!(l["prefix"], "10.60.0.0/24");
    d.ctl(&[
        "lease",
        "nodes",
        "--prefix",
        "10.60.7.0/24",
        "--owner",
        "node/w2",
    ])
    .ok();
    let list = d
        .ctl(&["lease", "list", "--pool", "nodes"])
        .ok()
        .to_string();
    assert!(
        list.contains("10.60.7.0/24") && list.contains("node/w2"),
        "{list}"
    );
    assert!(
        d.ctl(&["lease", "release", "nodes", "10.60.7.0/24"])
            .ok()
            .contains("released")
    );
    d.ctl(&["lease", "release", "nodes", "10.60.7.0/24"])
        .fails(6, &[]);
    d.ctl(&["lease", "nodes", "--owner", "x"])
        .fails(2, &["--length"]);
    // kipamd answers a taken prefix with 409 overlap naming the lease in the way.
    d.ctl(&["lease", "nodes", "--prefix", "10.60.0.0/24", "--owner", "x"])
        .fails(5, &["overlaps 10.60.0.0/24"]);

    d.ctl(&["pool", "create", "pods", "10.61.0.0/24"]).ok();
    d.ctl(&["alloc", "net1/a/eth0", "--pool", "pods", "--node", "w1"])
        .ok();
    d.ctl(&["alloc", "net1/b/eth0", "--pool", "pods", "--node", "w1"])
        .ok();
    let u = d.ctl(&["usage", "--nodes"]).ok().to_string();
    assert!(
        u.contains("POOL") && u.contains("pods") && u.contains("NODE") && u.contains("w1"),
        "{u}"
    );
    assert!(u.contains("nodes") && u.contains("[#"), "{u}");
    let u = d.ctl(&["usage", "-o", "json"]).json();
    assert_eq!(u["pools"].as_array().unwrap().len(), 2);

    let g = d
        .ctl(&[
            "gc",
            "--node",
            "w1",
            "--network",
            "net1",
            "--valid",
            "net1/a/eth0",
            "--grace",
            "3600",
        ])
        .ok()
        .to_string();
    assert!(
        g.contains("net1/b/eth0") && !g.contains("net1/a/eth0"),
        "{g}"
    );
    let pending = d.ctl(&["gc", "-o", "json"]).json();
    assert_eq!(pending["pending"][0]["handle"], "net1/b/eth0");
    d.ctl(&["gc", "--valid", "x"])
        .fails(2, &["need --node or --network"]);

    let bash = d.ctl(&["completions", "bash"]).ok().to_string();
    assert!(
        bash.contains("kipamctl") && bash.contains("host-check"),
        "completion script"
    );
    assert!(
        d.ctl(&["completions", "zsh"])
            .ok()
            .contains("#compdef kipamctl")
    );
    d.ctl(&["completions", "tcsh"]).fails(2, &["invalid value"]);
}

#[test]
fn external_networks_import_and_overlaps() {
    let d = Daemon::start(&[]);
    let dir = TempDir::new("ext");
    d.ctl(&[
        "external",
        "add",
        "office",
        "192.168.0.0/16",
        "--description",
        "site A",
    ])
    .ok();
    let l = d.ctl(&["external", "list"]).ok().to_string();
    assert!(l.contains("office") && l.contains("site A"), "{l}");
    let csv: String = std::iter::once("name,cidr,scope,description\n".to_string())
        .chain((0..40).map(|i| format!("vpc-{i},172.20.{i}.0/24,default,imported\n")))
        .collect();
    let f = dir.file("nets.csv", &csv);
    let r = d.ctl(&["external", "import", f.to_str().unwrap()]);
    assert!(r.ok().contains("40 added"), "{r:#?}");
    assert!(
        r.stderr
            .contains("importing external networks: 40/40 (100%)"),
        "progress on stderr: {r:#?}"
    );
    // Re-running is harmless: all unchanged.
    assert!(
        d.ctl(&["external", "import", f.to_str().unwrap()])
            .ok()
            .contains("40 unchanged")
    );
    // JSON from stdin, as `external list -o json` prints it.
    let json = r#"{"items": [{"name": "dc", "cidr": "10.200.0.0/16"}]}"#;
    let r = ctl_stdin(&d.url(), &["external", "import", "-"], json);
    assert!(r.ok().contains("1 added"), "{r:#?}");
    // A bad line: nothing is sent, the line is named.
    let bad = dir.file("bad.csv", "a,10.1.0.0/16\nb,10.2.0.1/16\n");
    d.ctl(&["external", "import", bad.to_str().unwrap()])
        .fails(2, &["line 2", "did you mean 10.2.0.0/16"]);
    assert!(!d.ctl(&["external", "list"]).ok().contains("10.1.0.0/16"));
    assert_eq!(
        d.ctl(&["external", "list", "-o", "json"]).json()["items"]
            .as_array()
            .unwrap()
            .len(),
        42
    );

    // Overlaps on kipamd: external networks may overlap each other; pools may not.
    assert_eq!(d.ctl(&["overlaps"]).ok().trim(), "no overlaps");
    d.ctl(&["external", "add", "wide", "172.20.0.0/16"]).ok();
    let r = d.ctl(&["overlaps", "-o", "json"]);
    assert_eq!(r.code, 5, "{r:#?}");
    let o: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(o["items"].as_array().unwrap().len(), 40);
    d.ctl(&["pool", "create", "clash", "192.168.1.0/24"])
        .fails(5, &["office"]);
    assert!(
        d.ctl(&["external", "remove", "wide"])
            .ok()
            .contains("removed")
    );
    d.ctl(&["external", "remove", "wide"]).fails(6, &[]);
}

#[test]
fn main_errors_have_their_exit_codes() {
    // Unreachable: 3, and how to start kipamd.
    let r = ctl_at("http://127.0.0.1:1", &["pool", "list"]);
    r.fails(
        3,
        &[
            "cannot reach kipamd at http://127.0.0.1:1",
            "is kipamd running?",
            "cargo run --release --bin kipamd",
        ],
    );
    ctl_at("unix:/nonexistent/kipamd.sock", &["usage"]).fails(3, &["cannot reach kipamd"]);
    ctl_at("https://x:1", &["usage"]).fails(2, &["https is not supported"]);
    // Usage errors from clap: 2.
    ctl_at("http://127.0.0.1:1", &["pool", "frobnicate"]).fails(2, &[]);
    assert_eq!(ctl_at("http://127.0.0.1:1", &["--help"]).code, 0);

    // Bad token: 4, and what to do.
    let dir = TempDir::new("tok");
    let line = std::process::Command::new(common::kipamd())
        .args(["hash-token", "--role", "viewer"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"s3cret-viewer\n")?;
            c.wait_with_output()
        })
        .unwrap();
    let tokens = dir.file("tokens", &String::from_utf8(line.stdout).unwrap());
    let d = Daemon::start(&["--tokens", tokens.to_str().unwrap()]);
    d.ctl(&["pool", "list"])
        .fails(4, &["unauthenticated", "KIPAM_TOKEN"]);
    let good = dir.file("good", "s3cret-viewer\n");
    let bad = dir.file("bad", "wrong\n");
    d.ctl(&["--token-file", bad.to_str().unwrap(), "pool", "list"])
        .fails(4, &["KIPAM_TOKEN"]);
    d.ctl(&["--token-file", good.to_str().unwrap(), "pool", "list"])
        .ok();
    let r = common::ctl_cmd(&d.url(), &["pool", "list"])
        .env("KIPAM_TOKEN", "s3cret-viewer")
        .output()
        .unwrap();
    assert!(r.status.success());
    // A viewer may not create pools: 4 as well, naming the role.
    d.ctl(&[
        "--token-file",
        good.to_str().unwrap(),
        "pool",
        "create",
        "p",
        "10.0.0.0/24",
    ])
    .fails(4, &["admin"]);
    let empty = dir.file("empty", "\n");
    d.ctl(&["--token-file", empty.to_str().unwrap(), "pool", "list"])
        .fails(2, &["one token"]);
    d.ctl(&["--token-file", "/nonexistent/token", "pool", "list"])
        .fails(2, &["cannot read /nonexistent/token"]);
}

#[test]
fn unix_socket_server() {
    let d = Daemon::start(&[]);
    let server = format!("unix:{}", d.socket().display());
    // The socket is trusted as allocator: reads and allocations, not pool changes.
    d.ctl(&["pool", "create", "p", "10.70.0.0/24"]).ok();
    let list = ctl_at(&server, &["pool", "list", "-o", "json"]).json();
    assert_eq!(list["items"][0]["config"]["name"], "p");
    ctl_at(&server, &["alloc", "h", "--pool", "p"]).ok();
}

#[test]
fn forecast_sees_a_pool_grow_and_marks_it_at_risk() {
    // Samples every second; the forecasts behind lists and metrics over 40 s (their
    // minimum span is then 10 s), so a test can watch a pool grow in real time.
    let d = Daemon::start(&["--sample-interval", "1", "--forecast-window", "40"]);
    d.ctl(&[
        "pool",
        "create",
        "grow",
        "10.90.0.0/24",
        "--block-prefix-length",
        "28",
    ])
    .ok();
    d.ctl(&["pool", "create", "flat", "10.91.0.0/24"]).ok();
    let c = d.client();
    c.allocate(&AllocateRequest::from_pools("f0", "w1", &["flat"]))
        .unwrap();
    // Not enough data at first: a valid answer, not an error.
    let f = d
        .ctl(&["forecast", "grow", "--window", "1m", "-o", "json"])
        .json();
    assert_eq!(f["status"], "not-enough-data");
    // Grow by 4 addresses a second for 12 s while kipamd samples every second.
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(12) {
        for _ in 0..2 {
            c.allocate(&AllocateRequest::from_pools(
                &format!("h{n}"),
                "w1",
                &["grow"],
            ))
            .unwrap();
            n += 1;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let f = d
        .ctl(&[
            "forecast",
            "grow",
            "--window",
            "1m",
            "--min-span",
            "4s",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(f["status"], "growing", "{f:#}");
    let per_day = f["growthPerDay"].as_f64().unwrap();
    // 4 addresses/s is 345,600 a day; allow for timing slack.
    assert!((200_000.0..500_000.0).contains(&per_day), "{f:#}");
    assert!(f["etaSeconds"].as_u64().unwrap() < 600, "{f:#}");
    assert_eq!(f["atRisk"]["reason"], "eta-soon", "{f:#}");
    let human = d
        .ctl(&["forecast", "grow", "--window", "1m", "--min-span", "4s"])
        .ok()
        .to_string();
    assert!(
        human.contains("status:") && human.contains("growing") && human.contains("R²"),
        "{human}"
    );
    // One node's blocks: w1 holds every address of grow, and grows with it.
    let node = d
        .ctl(&[
            "forecast",
            "grow",
            "--node",
            "w1",
            "--window",
            "1m",
            "--min-span",
            "4s",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(node["node"], "w1", "{node:#}");
    assert_eq!(node["status"], "growing", "{node:#}");
    let human = d
        .ctl(&["forecast", "grow", "--node", "w1", "--window", "1m"])
        .ok()
        .to_string();
    assert!(human.contains("node:") && human.contains("w1"), "{human}");
    // Every pool, soonest ETA first; the flat one is not growing.
    let all = d
        .ctl(&[
            "forecast",
            "--window",
            "1m",
            "--min-span",
            "4s",
            "-o",
            "json",
        ])
        .json();
    assert_eq!(all[0]["pool"], "grow");
    assert_eq!(all[1]["pool"], "flat");
    assert_eq!(all[1]["status"], "not-growing", "{all:#}");
    let table = d
        .ctl(&["forecast", "--window", "1m", "--min-span", "4s"])
        .ok()
        .to_string();
    assert!(
        table.starts_with("POOL") && table.contains("not-growing"),
        "{table}"
    );

    // kipamd's own forecasts (refreshed after each sample) mark the pool at risk in
    // pool list and usage, and export its ETA; the flat pool has no ETA series.
    let deadline = Instant::now() + Duration::from_secs(10);
    let grow = loop {
        let list = d.ctl(&["pool", "list", "-o", "json"]).json();
        let grow = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["config"]["name"] == "grow")
            .unwrap()
            .clone();
        if !grow["atRisk"].is_null() || Instant::now() > deadline {
            break grow;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(grow["atRisk"]["reason"], "eta-soon", "{grow:#}");
    let text = d.ctl(&["pool", "list"]).ok().to_string();
    assert!(text.contains("! runs out in"), "{text}");
    let usage = d.ctl(&["usage"]).ok().to_string();
    assert!(usage.contains("! runs out in"), "{usage}");
    let m = String::from_utf8(c.raw("GET", "/metrics", &[], None).unwrap().body).unwrap();
    let eta_line = m
        .lines()
        .find(|l| l.starts_with("kipam_pool_exhaustion_eta_seconds{pool=\"grow\"}"));
    let eta: f64 = eta_line
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("x")
        .parse()
        .unwrap_or(-1.0);
    assert!((0.0..600.0).contains(&eta), "{m}");
    assert!(
        !m.contains("kipam_pool_exhaustion_eta_seconds{pool=\"flat\"}"),
        "{m}"
    );

    // Invalid windows are usage errors, caught before asking.
    d.ctl(&["forecast", "grow", "--window", "soon"])
        .fails(2, &["is not a duration"]);
    d.ctl(&["forecast", "nope"]).fails(6, &[]);
    // A node needs its pool; a node with no blocks in it is not found.
    d.ctl(&["forecast", "--node", "w1"]).fails(2, &["<POOL>"]);
    d.ctl(&["forecast", "grow", "--node", "w2"])
        .fails(6, &["node \"w2\" has no blocks in pool \"grow\""]);
}
