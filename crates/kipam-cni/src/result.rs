//! The ADD result, shaped by the config's spec version, and the `resolvConf` reader.
//!
//! An IPAM plugin prints the abbreviated result: `ips`, `routes`, `dns`, never
//! `interfaces` (the calling plugin fills in the interface index). Before 1.0.0 each
//! `ips[]` entry carries `version` ("4"/"6"); from 1.0.0 it must not. Route attributes
//! added in 1.1 (`mtu`, `advmss`, `priority`, `table`, `scope`) are printed only for
//! 1.1.0 configs, since older readers do not know them. `cniVersion` echoes the config.

use std::net::IpAddr;
use std::path::Path;

use serde::Serialize;

use crate::backend::Assigned;
use crate::config::Route;
use crate::error::CniError;
use crate::version::SpecVersion;

/// DNS settings, as host-local's `parseResolvConf` reads them from a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Dns {
    /// `nameserver` lines, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    /// The last `domain` line.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Every `search` line's entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    /// Every `options` line's entries.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Parses resolv.conf text the way host-local does: comments (`#`, `;`) and lines with
/// fewer than two fields are skipped; `nameserver` takes its first argument, `domain`
/// replaces, `search` and `options` accumulate.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 2 {
            continue;
        }
        let rest = fields[1..].iter().map(|s| (*s).to_owned());
        match fields[0] {
            "nameserver" => dns.nameservers.push(fields[1].to_owned()),
            "domain" => dns.domain = fields[1].to_owned(),
            "search" => dns.search.extend(rest),
            "options" => dns.options.extend(rest),
            _ => {}
        }
    }
    dns
}

/// Reads and parses a resolv.conf (code 5 when it cannot be read).
pub fn read_resolv_conf(path: &Path) -> Result<Dns, CniError> {
    std::fs::read_to_string(path)
        .map(|t| parse_resolv_conf(&t))
        .map_err(|e| CniError::io(format!("reading resolvConf {}", path.display()), &e))
}

#[derive(Serialize)]
struct WireIp {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<IpAddr>,
}

#[derive(Serialize)]
struct WireRoute {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    advmss: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    priority: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    table: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<i64>,
}

#[derive(Serialize)]
struct WireResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    ips: Vec<WireIp>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    routes: Vec<WireRoute>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a Dns>,
}

/// Renders the ADD result for `version`.
pub fn render_add(
    version: SpecVersion,
    assigned: &[Assigned],
    routes: &[Route],
    dns: Option<&Dns>,
) -> String {
    let with_attrs = version >= SpecVersion::V1_1_0;
    let out = WireResult {
        cni_version: version.as_str(),
        ips: assigned
            .iter()
            .map(|a| WireIp {
                version: version
                    .has_ip_version()
                    .then_some(if a.address.addr().is_ipv4() { "4" } else { "6" }),
                address: a.address.to_string(),
                gateway: a.gateway,
            })
            .collect(),
        routes: routes
            .iter()
            .map(|r| WireRoute {
                dst: r.dst.to_string(),
                gw: r.gw,
                mtu: r.mtu.filter(|_| with_attrs),
                advmss: r.advmss.filter(|_| with_attrs),
                priority: r.priority.filter(|_| with_attrs),
                table: r.table.filter(|_| with_attrs),
                scope: r.scope.filter(|_| with_attrs),
            })
            .collect(),
        dns,
    };
    serde_json::to_string(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::version::SUPPORTED;
    use serde_json::{Value, json};

    fn assigned() -> Vec<Assigned> {
        vec![
            Assigned {
                address: "10.99.0.5/24".parse().expect("net"),
                gateway: Some("10.99.0.1".parse().expect("gw")),
            },
            Assigned {
                address: "fd00:10:99::5/64".parse().expect("net"),
                gateway: None,
            },
        ]
    }

    fn routes() -> Vec<Route> {
        vec![Route {
            dst: "0.0.0.0/0".parse().expect("dst"),
            gw: Some("10.99.0.1".parse().expect("gw")),
            mtu: Some(1400),
            advmss: None,
            priority: None,
            table: Some(7),
            scope: None,
        }]
    }

    #[test]
    fn shape_per_version() {
        for v in SUPPORTED {
            let out: Value =
                serde_json::from_str(&render_add(v, &assigned(), &routes(), None)).expect("json");
            assert_eq!(out["cniVersion"], v.as_str());
            assert!(out.get("interfaces").is_none());
            assert!(out.get("dns").is_none());
            let ips = out["ips"].as_array().expect("ips");
            assert_eq!(ips[0]["address"], "10.99.0.5/24");
            assert_eq!(ips[0]["gateway"], "10.99.0.1");
            assert!(ips[1].get("gateway").is_none());
            assert!(ips[0].get("interface").is_none());
            if v < SpecVersion::V1_0_0 {
                assert_eq!(
                    (&ips[0]["version"], &ips[1]["version"]),
                    (&json!("4"), &json!("6"))
                );
            } else {
                assert!(ips[0].get("version").is_none(), "{v:?}");
            }
            let r = &out["routes"][0];
            assert_eq!(
                (&r["dst"], &r["gw"]),
                (&json!("0.0.0.0/0"), &json!("10.99.0.1"))
            );
            if v == SpecVersion::V1_1_0 {
                assert_eq!((&r["mtu"], &r["table"]), (&json!(1400), &json!(7)));
            } else {
                assert!(r.get("mtu").is_none() && r.get("table").is_none(), "{v:?}");
            }
        }
    }

    #[test]
    fn dns_and_no_routes() {
        let dns = parse_resolv_conf(
            "# c\n; c\nnameserver 10.0.0.10\nnameserver 10.0.0.11 extra\ndomain a.local\n\
             domain b.local\nsearch x.local y.local\nsearch z.local\noptions ndots:5\nbogus\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "10.0.0.11"]);
        assert_eq!(dns.domain, "b.local");
        assert_eq!(dns.search, ["x.local", "y.local", "z.local"]);
        assert_eq!(dns.options, ["ndots:5"]);
        let out: Value = serde_json::from_str(&render_add(
            SpecVersion::V1_0_0,
            &assigned(),
            &[],
            Some(&dns),
        ))
        .expect("json");
        assert!(out.get("routes").is_none());
        assert_eq!(out["dns"]["nameservers"][1], "10.0.0.11");
        let empty: Value = serde_json::from_str(&render_add(
            SpecVersion::V1_0_0,
            &[],
            &[],
            Some(&Dns::default()),
        ))
        .expect("json");
        assert_eq!(empty["dns"], json!({}));
        assert_eq!(empty["ips"], json!([]));
    }

    #[test]
    fn missing_resolv_conf_is_io() {
        let e = read_resolv_conf(Path::new("/nonexistent/kipam/resolv.conf")).expect_err("io");
        assert_eq!(e.code, 5);
    }
}
