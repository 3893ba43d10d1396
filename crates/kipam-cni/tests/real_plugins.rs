//! Real-system tests: the reference CNI plugins (`bridge`, `ptp`, `macvlan`) calling
//! `kipam` as their IPAM plugin inside throwaway network namespaces, plus direct
//! plugin-level tests (every spec version, GC, STATUS, exhaustion, concurrency, crash).
//!
//! Every flow is written once over [`IpamKind`] and run with `kipam` and with the
//! reference `host-local`: the host-local runs prove the harness (a flow that fails with
//! host-local is a harness bug, not a kipam bug). Needs root, iproute2, iputils-ping and
//! containernetworking-plugins (CI installs them; see `.ci/run`); otherwise each test
//! prints `SKIPPED: <name>: <reason>`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use common::*;
use ipnet::IpNet;
use serde_json::{Value, json};

fn net_name(tag: &str) -> String {
    format!("kt-{tag}-{}-{}", std::process::id(), unique())
}

fn version_at_least(v: &str, min: &str) -> bool {
    let pos = |s: &str| KIPAM_VERSIONS.iter().position(|x| *x == s).unwrap_or(0);
    pos(v) >= pos(min)
}

/// The interface-plugin flow: two namespaces, addresses present, ping over IPv4 and
/// IPv6, CHECK, DEL twice, DEL after the namespace is gone, nothing left behind.
fn interface_flow(kind: IpamKind, test: &str, plugin: &str) {
    if !require(test, kind, &[plugin]) {
        return;
    }
    for version in INTERFACE_PLUGIN_VERSIONS {
        let rt = Runtime::new(kind, plugin);
        let (v4, v6) = pick_subnets();
        let mut conf = json!({
            "cniVersion": version, "name": net_name(plugin), "type": plugin,
            "ipam": rt.ipam_section(v4, Some(v6)),
        });
        match plugin {
            "bridge" => {
                rt.bridge("kbr0");
                conf["bridge"] = json!("kbr0");
                conf["isGateway"] = json!(false);
                conf["ipMasq"] = json!(false);
            }
            "ptp" => conf["ipMasq"] = json!(false),
            "macvlan" | "ipvlan" => {
                rt.parent_link("kparent0");
                conf["master"] = json!("kparent0");
                conf["mode"] = json!(if plugin == "macvlan" { "bridge" } else { "l2" });
            }
            other => panic!("no setup for {other}"),
        }
        let a_ns = Netns::new("a");
        let b_ns = Netns::new("b");
        let a = rt.add("ctr-a", &a_ns, &conf);
        let b = rt.add("ctr-b", &b_ns, &conf);
        let (a_ips, b_ips) = (a.ips(), b.ips());
        assert_eq!(a_ips.len(), 2, "{version}: {}", a.result);
        assert!(IpNet::V4(v4).contains(&a_ips[0]) && IpNet::V6(v6).contains(&a_ips[1]));
        assert!(
            a_ips.iter().all(|ip| !b_ips.contains(ip)),
            "{version}: shared address"
        );
        for (ns, ips) in [(&a_ns, &a_ips), (&b_ns, &b_ips)] {
            let present = ns.addresses("eth0");
            for ip in ips.iter() {
                assert!(
                    present.iter().any(|p| p.starts_with(&format!("{ip}/"))),
                    "{version}: {ip} not on eth0: {present:?}"
                );
            }
        }
        for ip in &b_ips {
            assert!(
                a_ns.ping(*ip),
                "{plugin} {version} {}: ping {ip} failed",
                kind.type_name()
            );
        }
        if version_at_least(version, "0.4.0") {
            for att in [&a, &b] {
                let out = rt.check(att, &conf);
                assert!(
                    out.success,
                    "{version}: CHECK {}: {} {}",
                    att.id, out.stdout, out.stderr
                );
            }
        }
        for _ in 0..2 {
            rt.del(&a, &conf).expect_ok(&format!("{version}: DEL a"));
        }
        b_ns.delete();
        for _ in 0..2 {
            rt.del(&b, &conf)
                .expect_ok(&format!("{version}: DEL b after its netns is gone"));
        }
        if plugin != "macvlan" && plugin != "ipvlan" {
            rt.assert_no_veths();
        }
        rt.assert_free(&conf, &[a_ips, b_ips].concat());
    }
}

#[test]
fn bridge_dual_stack_kipam() {
    interface_flow(IpamKind::Kipam, "bridge_dual_stack_kipam", "bridge");
}

#[test]
fn bridge_dual_stack_host_local() {
    interface_flow(
        IpamKind::HostLocal,
        "bridge_dual_stack_host_local",
        "bridge",
    );
}

#[test]
fn ptp_dual_stack_kipam() {
    interface_flow(IpamKind::Kipam, "ptp_dual_stack_kipam", "ptp");
}

#[test]
fn ptp_dual_stack_host_local() {
    interface_flow(IpamKind::HostLocal, "ptp_dual_stack_host_local", "ptp");
}

#[test]
fn macvlan_dual_stack_kipam() {
    interface_flow(IpamKind::Kipam, "macvlan_dual_stack_kipam", "macvlan");
}

#[test]
fn macvlan_dual_stack_host_local() {
    interface_flow(
        IpamKind::HostLocal,
        "macvlan_dual_stack_host_local",
        "macvlan",
    );
}

fn bridge_conf(rt: &Runtime, ipam: Value) -> Value {
    rt.bridge("kbr0");
    json!({"cniVersion": "1.0.0", "name": net_name("br"), "type": "bridge", "bridge": "kbr0",
        "isGateway": false, "ipMasq": false, "ipam": ipam})
}

/// 64 bridge ADDs at once: all succeed, no address twice.
fn concurrent_adds(kind: IpamKind, test: &str) {
    if !require(test, kind, &["bridge"]) {
        return;
    }
    let rt = Runtime::new(kind, "conc");
    let (v4, v6) = pick_subnets();
    let conf = bridge_conf(&rt, rt.ipam_section(v4, Some(v6)));
    let namespaces: Vec<Netns> = (0..64).map(|i| Netns::new(&format!("c{i}"))).collect();
    let attached: Vec<Attached> = std::thread::scope(|s| {
        let handles: Vec<_> = namespaces
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (rt, conf) = (&rt, &conf);
                s.spawn(move || rt.add(&format!("conc-{i}"), ns, conf))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut seen = HashSet::new();
    for att in &attached {
        assert_eq!(att.ips().len(), 2, "{}", att.result);
        for ip in att.ips() {
            assert!(seen.insert(ip), "{ip} handed out twice");
        }
    }
    std::thread::scope(|s| {
        for att in &attached {
            let (rt, conf) = (&rt, &conf);
            s.spawn(move || rt.del(att, conf).expect_ok("DEL"));
        }
    });
    rt.assert_no_veths();
}

#[test]
fn bridge_64_concurrent_adds_kipam() {
    concurrent_adds(IpamKind::Kipam, "bridge_64_concurrent_adds_kipam");
}

#[test]
fn bridge_64_concurrent_adds_host_local() {
    concurrent_adds(IpamKind::HostLocal, "bridge_64_concurrent_adds_host_local");
}

/// A 3-address range serves 3; the 4th ADD fails with error JSON and allocates nothing.
fn exhaustion(kind: IpamKind, test: &str) {
    if !require(test, kind, &["bridge"]) {
        return;
    }
    let rt = Runtime::new(kind, "exh");
    let (v4, _) = pick_subnets();
    let mut ipam = ipam_section(kind, rt.data_dir.path(), v4, None);
    ipam["ranges"] = json!([[{"subnet": v4.to_string(),
        "rangeStart": nth(IpNet::V4(v4), 10).to_string(), "rangeEnd": nth(IpNet::V4(v4), 12).to_string()}]]);
    let conf = bridge_conf(&rt, ipam);
    let namespaces: Vec<Netns> = (0..4).map(|i| Netns::new(&format!("x{i}"))).collect();
    let mut held = Vec::new();
    for (i, ns) in namespaces.iter().take(3).enumerate() {
        held.extend(rt.add(&format!("exh-{i}"), ns, &conf).ips());
    }
    held.sort();
    let expected: Vec<IpAddr> = (10..=12).map(|n| nth(IpNet::V4(v4), n)).collect();
    assert_eq!(held, expected);
    let fourth = rt.exec("ADD", "exh-3", &namespaces[3].path(), &conf);
    assert!(!fourth.success, "4th ADD succeeded: {}", fourth.stdout);
    let err = fourth.json();
    assert!(
        err["code"].as_u64().is_some(),
        "no error JSON: {} {}",
        fourth.stdout,
        fourth.stderr
    );
    assert!(err["msg"].as_str().is_some());
    if kind == IpamKind::Kipam {
        assert_eq!(err["code"], 100, "{err}");
    }
    // Nothing held by the failed attachment: an IPAM CHECK for it must fail.
    let mut c = conf.clone();
    c["prevResult"] = json!({"cniVersion": "1.0.0", "ips": []});
    let check = rt.ipam("CHECK", "exh-3", "", &c);
    assert!(
        !check.success,
        "failed ADD left a reservation: {}",
        check.stdout
    );
    // The runtime's DEL after a failed ADD (pitfall 7) succeeds.
    rt.exec("DEL", "exh-3", &namespaces[3].path(), &conf)
        .expect_ok("DEL after failed ADD");
}

#[test]
fn exhaustion_kipam() {
    exhaustion(IpamKind::Kipam, "exhaustion_kipam");
}

#[test]
fn exhaustion_host_local() {
    exhaustion(IpamKind::HostLocal, "exhaustion_host_local");
}

/// Direct IPAM calls at every spec version the plugin speaks: ADD, CHECK, DEL twice,
/// DEL of an attachment never added.
fn direct_every_version(kind: IpamKind, test: &str) {
    if !require(test, kind, &[]) {
        return;
    }
    let versions: &[&str] = match kind {
        IpamKind::Kipam | IpamKind::KipamDaemon => &KIPAM_VERSIONS,
        IpamKind::HostLocal => &INTERFACE_PLUGIN_VERSIONS,
    };
    for version in versions {
        let rt = Runtime::new(kind, "direct");
        let (v4, v6) = pick_subnets();
        let conf = json!({"cniVersion": version, "name": net_name("d"),
            "ipam": rt.ipam_section(v4, Some(v6))});
        let out = rt.ipam("ADD", "d1", "IgnoreUnknown=1;K8S_POD_NAME=p", &conf);
        let result = out.expect_ok(&format!("{version}: ADD"));
        assert_eq!(result["cniVersion"], *version);
        assert!(result.get("interfaces").is_none());
        let has_version = result["ips"][0].get("version").is_some();
        assert_eq!(
            has_version,
            version.starts_with("0."),
            "{version}: {result}"
        );
        assert_eq!(result_ips(&result).len(), 2);
        if kind == IpamKind::Kipam {
            let again = rt.ipam("ADD", "d1", "", &conf).expect_ok("repeated ADD");
            assert_eq!(
                again["ips"], result["ips"],
                "{version}: repeated ADD differs"
            );
        }
        let c = with_prev(&conf, &result);
        let check = rt.ipam("CHECK", "d1", "", &c);
        if version_at_least(version, "0.4.0") {
            check.expect_ok(&format!("{version}: CHECK"));
        } else {
            assert_eq!(check.json()["code"], 1, "{version}: CHECK before 0.4.0");
        }
        for _ in 0..2 {
            rt.ipam("DEL", "d1", "", &c)
                .expect_ok(&format!("{version}: DEL"));
        }
        rt.ipam("DEL", "never-added", "", &conf)
            .expect_ok("DEL of an unknown attachment");
        rt.assert_free(&conf, &result_ips(&result));
    }
}

#[test]
fn direct_every_version_kipam() {
    direct_every_version(IpamKind::Kipam, "direct_every_version_kipam");
}

#[test]
fn direct_every_version_host_local() {
    direct_every_version(IpamKind::HostLocal, "direct_every_version_host_local");
}

/// GC and STATUS called on `kipam` directly with 1.1.0 configs (Debian's interface
/// plugins stop at 1.0.0, pitfall 1).
#[test]
fn gc_and_status_kipam() {
    let test = "gc_and_status_kipam";
    let kind = IpamKind::Kipam;
    if !require(test, kind, &[]) {
        return;
    }
    let rt = Runtime::new(kind, "gc");
    let (v4, _) = pick_subnets();
    let mut ipam = ipam_section(kind, rt.data_dir.path(), v4, None);
    ipam["ranges"] = json!([[{"subnet": v4.to_string(),
        "rangeStart": nth(IpNet::V4(v4), 10).to_string(), "rangeEnd": nth(IpNet::V4(v4), 12).to_string()}]]);
    let conf = json!({"cniVersion": "1.1.0", "name": net_name("gc"), "ipam": ipam});
    let status = |want_ok: bool| {
        let out = rt.ipam("STATUS", "", "", &conf);
        assert_eq!(
            out.success, want_ok,
            "STATUS: {} {}",
            out.stdout, out.stderr
        );
        if !want_ok {
            assert_eq!(out.json()["code"], 50);
        } else {
            assert!(out.stdout.trim().is_empty());
        }
    };
    status(true);
    let results: HashMap<&str, Value> = ["a", "b", "c"]
        .into_iter()
        .map(|id| (id, rt.ipam("ADD", id, "", &conf).expect_ok("ADD")))
        .collect();
    status(false);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    gc["cni.dev/attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
    let out = rt.ipam("GC", "", "", &gc);
    assert!(
        out.success && out.stdout.trim().is_empty(),
        "GC: {} {}",
        out.stdout,
        out.stderr
    );
    for (id, keep) in [("a", false), ("b", true), ("c", false)] {
        let check = rt.ipam("CHECK", id, "", &with_prev(&conf, &results[id]));
        assert_eq!(check.success, keep, "{id}: {}", check.stdout);
    }
    status(true);
    // GC and STATUS are refused below 1.1.0, with code 1.
    for verb in ["GC", "STATUS"] {
        let mut old = gc.clone();
        old["cniVersion"] = json!("1.0.0");
        let out = rt.ipam(verb, "", "", &old);
        assert_eq!(out.json()["code"], 1, "{verb}: {}", out.stdout);
    }
    assert!(
        rt.ipam("CHECK", "b", "", &with_prev(&conf, &results["b"]))
            .success
    );
}

/// 500 ADD execs, 64 at a time, about 20% SIGKILLed at random moments. Afterwards no
/// address is held twice, the store passes its integrity check, and every ADD that
/// returned success still holds its address.
fn crash(kind: IpamKind, test: &str) {
    if !require(test, kind, &[]) {
        return;
    }
    const TOTAL: usize = 500;
    const PARALLEL: usize = 64;
    let rt = Runtime::new(kind, "crash");
    // 500 attachments need more than a /24: a /22 of its own, checked like the others.
    let wide = free_v4_net(&["10.98.0.0/22", "10.97.0.0/22", "10.96.0.0/22"]);
    let mut ipam = rt.ipam_section(wide, None);
    if kind != IpamKind::KipamDaemon {
        ipam["ranges"] = json!([[{"subnet": wide.to_string()}]]);
    }
    ipam["routes"] = json!([]);
    let version = if kind != IpamKind::HostLocal {
        "1.1.0"
    } else {
        "1.0.0"
    };
    let conf = json!({"cniVersion": version, "name": net_name("crash"), "ipam": ipam});
    let mut rng = Rng::from_env(test);
    // Kill delays in µs: 0 (before exec), up to 20 ms (mid-ADD or after it finished).
    let plan: Vec<Option<u64>> = (0..TOTAL)
        .map(|_| (rng.below(100) < 20).then(|| rng.below(20_000)))
        .collect();
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let mut results: Vec<Option<Outcome>> = vec![None; TOTAL];
        let chunks: Vec<Vec<usize>> = (0..PARALLEL)
            .map(|w| (w..TOTAL).step_by(PARALLEL).collect())
            .collect();
        let handles: Vec<_> = chunks
            .into_iter()
            .map(|idxs| {
                let (rt, conf, plan) = (&rt, &conf, &plan);
                s.spawn(move || {
                    idxs.into_iter()
                        .map(|i| {
                            let id = format!("crash-{i}");
                            let vars = [
                                ("CNI_COMMAND", "ADD"),
                                ("CNI_CONTAINERID", id.as_str()),
                                ("CNI_NETNS", "/var/run/netns/kipam-crash"),
                                ("CNI_IFNAME", "eth0"),
                                ("CNI_PATH", "/usr/lib/cni"),
                            ];
                            let mut child = spawn_plugin(None, &rt.kind.binary(), &vars, conf);
                            if let Some(delay) = plan[i] {
                                nap(delay);
                                let _ = child.kill();
                            }
                            (i, finish(child))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, o) in h.join().unwrap() {
                results[i] = Some(o);
            }
        }
        results.into_iter().map(Option::unwrap).collect()
    });
    let killed = outcomes.iter().filter(|o| o.killed).count();
    let succeeded: Vec<(String, Value)> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| o.success)
        .map(|(i, o)| (format!("crash-{i}"), o.json()))
        .collect();
    println!(
        "{test}: {} succeeded, {killed} killed, {} failed otherwise",
        succeeded.len(),
        TOTAL - succeeded.len() - killed
    );
    if let Some(o) = outcomes.iter().find(|o| !o.success && !o.killed) {
        panic!(
            "an ADD that was not killed failed: {} {}",
            o.stdout, o.stderr
        );
    }
    assert!(
        killed > 0,
        "the schedule killed nothing; the test proves nothing"
    );

    let mut seen = HashMap::new();
    for (id, r) in &succeeded {
        for ip in result_ips(r) {
            if let Some(other) = seen.insert(ip, id.clone()) {
                panic!("{ip} returned to both {other} and {id}");
            }
        }
    }

    let mut rt = rt;
    if let Some(d) = rt.daemon.as_mut() {
        // The store is kipamd's: check it stopped, then bring kipamd back for the rest.
        d.stop();
        assert_store_integrity(rt.data_dir.path());
        if let Some(d) = rt.daemon.as_mut() {
            d.restart();
        }
    } else {
        assert_store_integrity(rt.data_dir.path());
    }

    for (id, r) in &succeeded {
        let check = rt.ipam("CHECK", id, "", &with_prev(&conf, r));
        assert!(
            check.success,
            "{id} lost its address: {} {}",
            check.stdout, check.stderr
        );
    }
    match kind {
        IpamKind::Kipam | IpamKind::KipamDaemon => {
            // A repeated ADD answers what each attachment holds: the successful ones
            // their address, the killed ones whatever (if anything) they got. Across all
            // 500, no address may appear twice.
            let mut holders = HashMap::new();
            let ok: HashMap<&String, &Value> = succeeded.iter().map(|(i, r)| (i, r)).collect();
            for i in 0..TOTAL {
                let id = format!("crash-{i}");
                let r = rt.ipam("ADD", &id, "", &conf).expect_ok("re-ADD");
                if let Some(first) = ok.get(&id) {
                    assert_eq!(r["ips"], first["ips"], "{id}: address changed");
                }
                for ip in result_ips(&r) {
                    if let Some(other) = holders.insert(ip, id.clone()) {
                        panic!("{ip} held by both {other} and {id}");
                    }
                }
            }
        }
        IpamKind::HostLocal => {
            // host-local keeps one file per address naming its holder.
            let dir = rt.data_dir.path().join(conf["name"].as_str().unwrap());
            let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
            for entry in std::fs::read_dir(&dir).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.parse::<IpAddr>().is_ok() {
                    let text = std::fs::read_to_string(entry.path()).unwrap();
                    let holder = text.lines().next().unwrap_or("").trim().to_owned();
                    by_id.entry(holder).or_default().push(name);
                }
            }
            for (id, ips) in &by_id {
                assert_eq!(ips.len(), 1, "{id} holds {ips:?}");
            }
            for (id, r) in &succeeded {
                let ip = result_ips(r)[0].to_string();
                assert_eq!(by_id.get(id), Some(&vec![ip]), "{id}");
            }
        }
    }
}

#[test]
fn crash_kill_kipam() {
    crash(IpamKind::Kipam, "crash_kill_kipam");
}

#[test]
fn crash_kill_kipam_daemon() {
    crash(IpamKind::KipamDaemon, "crash_kill_kipam_daemon");
}

#[test]
fn bridge_dual_stack_kipam_daemon() {
    interface_flow(
        IpamKind::KipamDaemon,
        "bridge_dual_stack_kipam_daemon",
        "bridge",
    );
}

#[test]
fn bridge_64_concurrent_adds_kipam_daemon() {
    concurrent_adds(
        IpamKind::KipamDaemon,
        "bridge_64_concurrent_adds_kipam_daemon",
    );
}

#[test]
fn crash_kill_host_local() {
    crash(IpamKind::HostLocal, "crash_kill_host_local");
}
