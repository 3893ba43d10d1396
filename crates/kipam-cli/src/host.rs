//! The networks of the machine kipamctl runs on (routes and interface addresses), and
//! their collisions with pools: the classic case is a cluster's 10.42.0.0/16 that also
//! is the office or home LAN, so pod traffic to it is routed out instead of to pods.
//!
//! The routes and addresses come from iproute2's JSON output (`ip -j -4/-6 route show`,
//! `ip -j addr show`), which is the kernel's view in one stable format; without `ip`
//! they come from `/proc/net/route`, `/proc/net/ipv6_route` and `/proc/net/if_inet6`
//! (IPv4 addresses have no /proc file, but the kernel adds a route for each address's
//! subnet, so the route still shows it). Parsing is separate from reading, so every
//! parser is unit-tested on captured output.
//!
//! Not collisions, and skipped: default routes, loopback, link-local and multicast.
//! Routes a cluster installs for its own pods (cni0, flannel.1, cali*) are collisions
//! only in the eyes of this check; `--ignore-dev` leaves such devices out.

use std::net::IpAddr;
use std::process::Command;

use ipnet::IpNet;
use kipam_core::AddrRange;
use serde::{Deserialize, Serialize};

use crate::error::CliError;

/// What a host network is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostKind {
    /// A route of the main table.
    Route,
    /// An address configured on an interface (with its subnet).
    Address,
}

/// A route or an interface address of the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostNet {
    /// Route or address.
    pub kind: HostKind,
    /// The network (an address's subnet).
    pub net: IpNet,
    /// The device.
    pub dev: String,
    /// How `ip` would show it: `10.42.3.1/24` for an address, `via 192.168.1.1` or
    /// `proto kernel` for a route.
    pub detail: String,
}

/// Reads the host's routes and addresses (`ip -j`, else /proc).
pub fn read_host() -> Result<Vec<HostNet>, CliError> {
    match read_with_ip() {
        Some(nets) => Ok(nets),
        None => read_proc(),
    }
}

fn ip_json(args: &[&str]) -> Option<String> {
    let out = Command::new("ip").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn read_with_ip() -> Option<Vec<HostNet>> {
    let mut nets = Vec::new();
    for fam in ["-4", "-6"] {
        // An empty table prints nothing at all, not `[]`.
        let text = ip_json(&["-j", fam, "route", "show"])?;
        nets.extend(parse_ip_routes(&text).ok()?);
    }
    let text = ip_json(&["-j", "addr", "show"])?;
    nets.extend(parse_ip_addrs(&text).ok()?);
    Some(nets)
}

fn read_proc() -> Result<Vec<HostNet>, CliError> {
    let read = |path: &str, what| {
        std::fs::read_to_string(path).map_err(|source| CliError::Host { what, source })
    };
    let mut nets = parse_proc_route(&read("/proc/net/route", "routes")?);
    // Hosts without IPv6 have neither file.
    if let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") {
        nets.extend(parse_proc_ipv6_route(&t));
    }
    if let Ok(t) = std::fs::read_to_string("/proc/net/if_inet6") {
        nets.extend(parse_proc_if_inet6(&t));
    }
    Ok(nets)
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    dev: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// Parses `ip -j route show` (either family).
pub fn parse_ip_routes(text: &str) -> Result<Vec<HostNet>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<IpRoute> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    Ok(routes
        .into_iter()
        .filter(|r| r.kind.as_deref().is_none_or(|k| k == "unicast"))
        .filter_map(|r| {
            let net = parse_dst(&r.dst)?;
            let detail = match (&r.gateway, &r.protocol) {
                (Some(g), _) => format!("via {g}"),
                (None, Some(p)) => format!("proto {p}"),
                (None, None) => String::new(),
            };
            Some(HostNet {
                kind: HostKind::Route,
                net,
                dev: r.dev.unwrap_or_default(),
                detail,
            })
        })
        .collect())
}

fn parse_dst(dst: &str) -> Option<IpNet> {
    if dst == "default" {
        return None;
    }
    if dst.contains('/') {
        return dst.parse::<IpNet>().ok().map(|n| n.trunc());
    }
    dst.parse::<IpAddr>().ok().map(IpNet::from)
}

#[derive(Deserialize)]
struct IpLink {
    #[serde(default)]
    ifname: String,
    #[serde(default)]
    addr_info: Vec<IpAddrInfo>,
}

#[derive(Deserialize)]
struct IpAddrInfo {
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
}

/// Parses `ip -j addr show`.
pub fn parse_ip_addrs(text: &str) -> Result<Vec<HostNet>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let links: Vec<IpLink> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for l in links {
        for a in l.addr_info {
            let (Some(local), Some(len)) = (a.local, a.prefixlen) else {
                continue;
            };
            let Ok(addr) = local.parse::<IpAddr>() else {
                continue;
            };
            let Ok(net) = IpNet::new(addr, len) else {
                continue;
            };
            out.push(HostNet {
                kind: HostKind::Address,
                net: net.trunc(),
                dev: l.ifname.clone(),
                detail: format!("{addr}/{len}"),
            });
        }
    }
    Ok(out)
}

/// Parses `/proc/net/route` (IPv4; addresses and masks in little-endian hex).
pub fn parse_proc_route(text: &str) -> Vec<HostNet> {
    // The kernel prints each address as a host-order u32: from_be undoes that on
    // either endianness.
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (dev, dst, gw, mask) = (
                f.first()?,
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(7)?)?,
            );
            let len = u8::try_from(mask.leading_ones()).ok()?;
            let net = IpNet::new(IpAddr::from(std::net::Ipv4Addr::from(dst)), len).ok()?;
            let detail = if gw == 0 {
                String::new()
            } else {
                format!("via {}", std::net::Ipv4Addr::from(gw))
            };
            Some(HostNet {
                kind: HostKind::Route,
                net: net.trunc(),
                dev: dev.to_string(),
                detail,
            })
        })
        .collect()
}

fn v6_hex(s: &str) -> Option<std::net::Ipv6Addr> {
    u128::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.len() == 32)
        .map(std::net::Ipv6Addr::from)
}

/// Parses `/proc/net/ipv6_route`.
pub fn parse_proc_ipv6_route(text: &str) -> Vec<HostNet> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = v6_hex(f.first()?)?;
            let len = u8::from_str_radix(f.get(1)?, 16).ok()?;
            let gw = v6_hex(f.get(4)?)?;
            let dev = f.get(9)?;
            let net = IpNet::new(IpAddr::from(dst), len).ok()?;
            Some(HostNet {
                kind: HostKind::Route,
                net: net.trunc(),
                dev: dev.to_string(),
                detail: if gw.is_unspecified() {
                    String::new()
                } else {
                    format!("via {gw}")
                },
            })
        })
        .collect()
}

/// Parses `/proc/net/if_inet6` (IPv6 interface addresses).
pub fn parse_proc_if_inet6(text: &str) -> Vec<HostNet> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let addr = v6_hex(f.first()?)?;
            let len = u8::from_str_radix(f.get(2)?, 16).ok()?;
            let dev = f.get(5)?;
            let net = IpNet::new(IpAddr::from(addr), len).ok()?;
            Some(HostNet {
                kind: HostKind::Address,
                net: net.trunc(),
                dev: dev.to_string(),
                detail: format!("{addr}/{len}"),
            })
        })
        .collect()
}

/// Whether a host network is of no interest: default, loopback, link-local, multicast.
pub fn ignorable(n: &HostNet) -> bool {
    if n.net.prefix_len() == 0 || n.dev == "lo" {
        return true;
    }
    match n.net.addr() {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_multicast(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Whether `dev` matches one of `patterns` (`cni0`, or a prefix with `*`: `cali*`).
pub fn dev_matches(dev: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => dev.starts_with(prefix),
        None => dev == p,
    })
}

/// A pool to check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolNet {
    /// Pool name.
    pub name: String,
    /// Its CIDR.
    pub cidr: IpNet,
}

/// A pool that shares addresses with a host route or address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collision {
    /// The pool.
    pub pool: String,
    /// Its CIDR.
    pub pool_cidr: IpNet,
    /// The host's route or address.
    pub host: HostNet,
    /// The addresses both cover.
    pub shared: AddrRange,
}

/// Every pool × host network pair sharing addresses, by pool then host network, with
/// uninteresting host networks and `ignore_devs` left out and duplicates removed.
pub fn collisions(pools: &[PoolNet], host: &[HostNet], ignore_devs: &[String]) -> Vec<Collision> {
    let mut out = Vec::new();
    for p in pools {
        let pr = AddrRange::of_net(p.cidr);
        for h in host {
            if ignorable(h) || dev_matches(&h.dev, ignore_devs) {
                continue;
            }
            if let Some(shared) = pr.intersection(&AddrRange::of_net(h.net)) {
                let c = Collision {
                    pool: p.name.clone(),
                    pool_cidr: p.cidr,
                    host: h.clone(),
                    shared,
                };
                if !out.contains(&c) {
                    out.push(c);
                }
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Captured in a network namespace with a veth carrying 10.42.3.1/24.
    const ROUTES: &str = r#"[{"dst":"10.42.3.0/24","dev":"va","protocol":"kernel","scope":"link","prefsrc":"10.42.3.1","flags":["linkdown"]},{"dst":"default","gateway":"192.168.1.1","dev":"eth0"},{"dst":"192.168.7.9","gateway":"192.168.1.1","dev":"eth0"},{"type":"unreachable","dst":"10.99.0.0/16","flags":[]}]"#;
    const ADDRS: &str = r#"[{"ifindex":1,"ifname":"lo","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},{"ifindex":3,"ifname":"va","addr_info":[{"family":"inet","local":"10.42.3.1","prefixlen":24},{"family":"inet6","local":"fe80::1","prefixlen":64}]}]"#;

    #[test]
    fn parses_ip_json() {
        let r = parse_ip_routes(ROUTES).unwrap();
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].net.to_string(), "10.42.3.0/24");
        assert_eq!(r[0].detail, "proto kernel");
        assert_eq!(r[1].net.to_string(), "192.168.7.9/32");
        assert_eq!(r[1].detail, "via 192.168.1.1");
        assert!(parse_ip_routes("").unwrap().is_empty());
        assert!(parse_ip_routes("{").is_err());
        let a = parse_ip_addrs(ADDRS).unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[1].net.to_string(), "10.42.3.0/24");
        assert_eq!(a[1].detail, "10.42.3.1/24");
    }

    #[test]
    fn parses_proc() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\nva\t00032A0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\neth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        let r = parse_proc_route(route);
        assert_eq!(r[0].net.to_string(), "10.42.3.0/24");
        assert_eq!(r[1].net.prefix_len(), 0);
        assert_eq!(r[1].detail, "via 192.168.1.1");
        let v6 = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n";
        let r = parse_proc_ipv6_route(v6);
        assert_eq!(r[0].net.to_string(), "fd00::/64");
        assert_eq!(r[0].dev, "eth0");
        let a = parse_proc_if_inet6("fd000000000000000000000000000002 02 40 00 80     eth0\n");
        assert_eq!(a[0].detail, "fd00::2/64");
        assert!(parse_proc_route("garbage\nline without fields\n").is_empty());
    }

    #[test]
    fn finds_collisions_and_skips_noise() {
        let mut host = parse_ip_routes(ROUTES).unwrap();
        host.extend(parse_ip_addrs(ADDRS).unwrap());
        host.push(HostNet {
            kind: HostKind::Route,
            net: "10.42.9.0/24".parse().unwrap(),
            dev: "cni0".into(),
            detail: String::new(),
        });
        let pools = [
            PoolNet {
                name: "pods".into(),
                cidr: "10.42.0.0/16".parse().unwrap(),
            },
            PoolNet {
                name: "lo-like".into(),
                cidr: "127.0.0.0/8".parse().unwrap(),
            },
        ];
        let c = collisions(&pools, &host, &["cni*".into()]);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(c.iter().all(|c| c.pool == "pods"));
        assert_eq!(c[0].host.kind, HostKind::Route);
        assert_eq!(c[1].host.kind, HostKind::Address);
        assert_eq!(
            c[1].shared,
            AddrRange::of_net("10.42.3.0/24".parse().unwrap())
        );
        assert_eq!(collisions(&pools, &host, &[]).len(), 3);
        assert!(dev_matches("cali123", &["cali*".into()]) && !dev_matches("eth0", &["eth".into()]));
    }
}
