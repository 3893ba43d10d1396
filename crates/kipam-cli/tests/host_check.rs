//! Real-system test of `kipamctl host-check` (and `plan --avoid-host`): in a network
//! namespace the test creates, a veth carries 10.42.3.1/24 — the classic home/office LAN
//! inside a cluster's 10.42.0.0/16 — and kipamctl, run inside the namespace, must report
//! the collision from iproute2's view (`ip -j`), from /proc when `ip` is not on its PATH,
//! and with pools taken from kipamd over its unix socket (a path, so it reaches across
//! network namespaces).
//!
//! Needs: root (network namespaces) and iproute2 with `ip netns`. A veth pair is created
//! inside the namespace because this kernel may lack the dummy module. Where it cannot
//! run, the test says SKIPPED and is counted (`KIPAM_REQUIRE_REAL=1` turns that into a
//! failure).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Daemon, TempDir, kipamctl, skip};
use serde_json::Value;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn create(name: &str) -> Result<Netns, String> {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip netns add failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Netns(name.to_string()))
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.0, "ip"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs kipamctl inside the namespace, optionally with a PATH lacking `ip`.
    fn kipamctl(&self, args: &[&str], without_ip: bool) -> common::Run {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        if without_ip {
            c.args(["env", "PATH=/nonexistent"]);
        }
        let out = c
            .arg(kipamctl())
            .args(args)
            .env_remove("KIPAM_TOKEN")
            .env_remove("KIPAM_SERVER")
            .output()
            .unwrap();
        common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn host_check_reports_a_lan_inside_a_pool() {
    let name = format!("kipamctl-hc-{}", std::process::id());
    let ns = match Netns::create(&name) {
        Ok(ns) => ns,
        Err(why) => {
            skip(
                "host_check_reports_a_lan_inside_a_pool",
                &format!("{why} (needs root and iproute2)"),
            );
            return;
        }
    };
    ns.ip(&["link", "add", "va", "type", "veth", "peer", "name", "vb"]);
    ns.ip(&["addr", "add", "10.42.3.1/24", "dev", "va"]);
    ns.ip(&["link", "set", "va", "up"]);

    let dir = TempDir::new("hc");
    let inv = dir.file(
        "pools.yaml",
        "pools:\n  - {name: pods, cidr: 10.42.0.0/16}\n  - {name: elsewhere, cidr: 10.99.0.0/16}\n",
    );
    let inv = inv.to_str().unwrap();

    // iproute2's view: the address and the kernel's route for its subnet.
    let r = ns.kipamctl(&["host-check", "--file", inv, "-o", "json"], false);
    assert_eq!(r.code, 5, "{r:#?}");
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let found = report["collisions"].as_array().unwrap();
    assert!(found.iter().all(|c| c["pool"] == "pods"), "{report:#}");
    let kinds: Vec<&str> = found
        .iter()
        .map(|c| c["host"]["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"route") && kinds.contains(&"address"),
        "{report:#}"
    );
    let addr = found
        .iter()
        .find(|c| c["host"]["kind"] == "address")
        .unwrap();
    assert_eq!(addr["host"]["detail"], "10.42.3.1/24");
    assert_eq!(addr["host"]["dev"], "va");
    assert_eq!(addr["shared"]["first"], "10.42.3.0");
    assert_eq!(addr["shared"]["last"], "10.42.3.255");

    // /proc's view, with no `ip` to run: the route still shows the LAN.
    let r = ns.kipamctl(&["host-check", "--file", inv], true);
    assert_eq!(r.code, 5, "{r:#?}");
    assert!(
        r.stdout.contains("pods") && r.stdout.contains("10.42.3.0/24") && r.stdout.contains("va"),
        "{r:#?}"
    );

    // The device a cluster owns can be left out: then nothing collides.
    let r = ns.kipamctl(&["host-check", "--file", inv, "--ignore-dev", "v*"], false);
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.stdout.contains("no collisions"), "{r:#?}");

    // Pools from kipamd, reached over its unix socket from inside the namespace.
    let d = Daemon::start(&[]);
    d.client()
        .create_pool(&kipam_core::PoolConfig::new(
            "cluster-pods",
            "10.42.0.0/16".parse().unwrap(),
        ))
        .unwrap();
    let server = format!("unix:{}", d.socket().display());
    let r = ns.kipamctl(&["--server", &server, "host-check"], false);
    assert_eq!(r.code, 5, "{r:#?}");
    assert!(
        r.stdout.contains("cluster-pods") && r.stdout.contains("10.42.3.1/24"),
        "{r:#?}"
    );
    assert!(r.stdout.contains("collisions: traffic from pods"), "{r:#?}");

    // And the planner, told to avoid this machine's networks, plans around the LAN.
    let r = ns.kipamctl(
        &[
            "plan",
            "--cluster",
            "c",
            "--nodes",
            "10",
            "--supernet",
            "10.42.0.0/16",
            "--avoid-host",
            "-o",
            "json",
        ],
        false,
    );
    let plan: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:#?}"));
    let fam = &plan["clusters"][0]["families"][0];
    for what in ["pods", "services"] {
        let net: ipnet::IpNet = fam[what]["cidr"].as_str().unwrap().parse().unwrap();
        let lan: ipnet::IpNet = "10.42.3.0/24".parse().unwrap();
        assert!(
            !net.contains(&lan.network()) && !lan.contains(&net.network()),
            "{what} {net} touches the LAN"
        );
    }
}
