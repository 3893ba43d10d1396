//! The network config on stdin: decoding, validation and host-local canonicalisation.
//!
//! An IPAM plugin receives the *whole* network config (the main plugin's keys included)
//! and reads `cniVersion`, `name`, `ipam`, `runtimeConfig`, `args`, `prevResult` and, for
//! GC, `cni.dev/valid-attachments`. kipam accepts host-local's `ipam` keys unchanged so
//! an existing config works after changing only `"type"`, and canonicalises ranges the
//! way host-local v1.1.1 does (`plugins/ipam/host-local/backend/allocator/range.go`):
//! `rangeStart` defaults to the network address + 1, `rangeEnd` to the last address
//! (minus the broadcast for IPv4), `gateway` to the network address + 1.
//!
//! kipam is stricter where host-local would hand out unusable addresses or mis-route:
//! a gateway must lie in its subnet and not be the network or IPv4 broadcast address;
//! an explicit `rangeStart` at the network address or `rangeEnd` at the IPv4 broadcast
//! is narrowed by one (those addresses are never handed out); reversed or empty ranges,
//! mixed families inside a range set and overlapping ranges (within and across sets) are
//! refused. Every refusal is code 7 and names the field by its JSON path.
//!
//! The config is walked as a `serde_json::Value` rather than derived structs so that
//! each error can name the exact field (`ipam.ranges[1][0].rangeEnd`), which is what an
//! operator needs when a pod is stuck in `ContainerCreating`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::backend::{Range, same_family};
use crate::env::{is_cni_identifier, parse_ip_request};
use crate::error::CniError;
use crate::version::SpecVersion;

/// The largest config accepted on stdin. Real configs are a few KiB; the cap bounds
/// memory and validation time for a runaway or hostile input.
pub const MAX_STDIN: usize = 1 << 20;
/// `ipam.dataDir` when absent or empty.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/kipam";
/// `ipam.reuseDelaySeconds` when absent: the design's default quarantine.
pub const DEFAULT_REUSE_DELAY_SECS: u64 = 30;
/// The largest `ipam.reuseDelaySeconds` accepted (one day).
pub const MAX_REUSE_DELAY_SECS: u64 = 86_400;

/// A route from `ipam.routes`, passed through to the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination, as written (host bits kept, as host-local does).
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// 1.1: route MTU.
    pub mtu: Option<i64>,
    /// 1.1: advertised MSS.
    pub advmss: Option<i64>,
    /// 1.1: route priority (metric).
    pub priority: Option<i64>,
    /// 1.1: routing table.
    pub table: Option<i64>,
    /// 1.1: route scope.
    pub scope: Option<i64>,
}

/// How the plugin reaches its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The embedded store under `dataDir` (the default; a drop-in for host-local).
    Standalone,
    /// `daemonSocket`: ask kipamd over its unix socket.
    Daemon {
        /// `ipam.daemonSocket`, an absolute path.
        socket: PathBuf,
        /// `ipam.pools`: pool names to allocate from, in order (may be empty).
        pools: Vec<String>,
    },
}

/// The validated `ipam` section plus the network name: everything a backend is built
/// from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// The network's `name` (part of the state key).
    pub network: String,
    /// `ipam.type` as written (not checked: the caller chose this binary by it).
    pub ipam_type: String,
    /// Canonical range sets, `runtimeConfig.ipRanges` and the `subnet` shorthand first.
    pub range_sets: Vec<Vec<Range>>,
    /// `ipam.routes`.
    pub routes: Vec<Route>,
    /// `ipam.dataDir`, default [`DEFAULT_DATA_DIR`].
    pub data_dir: PathBuf,
    /// `ipam.resolvConf`: a resolv.conf whose contents become the result's `dns`.
    pub resolv_conf: Option<PathBuf>,
    /// `ipam.reuseDelaySeconds`, default [`DEFAULT_REUSE_DELAY_SECS`].
    pub reuse_delay: Duration,
    /// Standalone or daemon.
    pub mode: Mode,
}

/// The parsed network config.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// `cniVersion`.
    pub cni_version: SpecVersion,
    /// The `ipam` section.
    pub ipam: IpamConfig,
    /// Static requests: `runtimeConfig.ips`, then `args.cni.ips` or (only when that is
    /// absent, per CONVENTIONS.md) CNI_ARGS `IP=`; deduplicated, in that order.
    pub static_ips: Vec<IpAddr>,
    prev_result: Option<Value>,
    valid_attachments: Option<Value>,
    attachments_old: Option<Value>,
}

/// Decodes stdin into a JSON object: code 6 when it is too large, not JSON, or not an
/// object.
pub fn decode(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    if stdin.len() > MAX_STDIN {
        return Err(CniError::decode(format!(
            "network config on stdin is larger than {MAX_STDIN} bytes"
        )));
    }
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(CniError::decode("network config must be a JSON object")),
        Err(e) => Err(CniError::decode(format!(
            "network config is not valid JSON: {e}"
        ))),
    }
}

/// The raw `cniVersion` string, for echoing in errors.
pub fn raw_version(obj: &Map<String, Value>) -> Option<&str> {
    obj.get("cniVersion").and_then(Value::as_str)
}

/// The checks the Go skel makes before any verb: the network `name` (code 7), then
/// `cniVersion` (code 1).
pub fn preflight(obj: &Map<String, Value>) -> Result<SpecVersion, CniError> {
    let name = opt_str(obj, "name", "name")?.unwrap_or("");
    if name.is_empty() {
        return Err(CniError::invalid_config("name", "missing network name"));
    }
    if !is_cni_identifier(name) {
        return Err(CniError::invalid_config(
            "name",
            format!("{name:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
        ));
    }
    let v = match obj.get("cniVersion") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(other) => {
            return Err(CniError::decode(format!(
                "cniVersion must be a string, got {other}"
            )));
        }
    };
    SpecVersion::from_config(v)
}

/// The fuzz-friendly entry: decodes and fully validates `stdin`, with the static IPs
/// from CNI_ARGS `IP=`. Never panics.
pub fn parse(stdin: &[u8], cni_args_ips: &[IpAddr]) -> Result<NetConf, CniError> {
    let obj = decode(stdin)?;
    parse_object(&obj, cni_args_ips)
}

/// Validates a decoded config (see [`parse`]).
pub fn parse_object(
    obj: &Map<String, Value>,
    cni_args_ips: &[IpAddr],
) -> Result<NetConf, CniError> {
    let cni_version = preflight(obj)?;
    let network = opt_str(obj, "name", "name")?.unwrap_or("").to_owned();
    let ipam = match obj.get("ipam") {
        Some(Value::Object(m)) => m,
        None | Some(Value::Null) => {
            return Err(CniError::invalid_config(
                "ipam",
                "IPAM config missing 'ipam' key",
            ));
        }
        Some(_) => return Err(CniError::invalid_config("ipam", "must be an object")),
    };
    let runtime = opt_obj(obj, "runtimeConfig", "runtimeConfig")?;

    // Range sets in host-local's order: runtimeConfig.ipRanges, the shorthand, ranges.
    let mut raw_sets: Vec<(String, Vec<(String, RawRange)>)> = Vec::new();
    if let Some(rt) = runtime {
        raw_sets.extend(raw_range_sets(rt, "ipRanges", "runtimeConfig.ipRanges")?);
    }
    if let Some(subnet) = opt_str(ipam, "subnet", "ipam.subnet")?
        && !subnet.is_empty()
    {
        let r = raw_range(ipam, "ipam", Some(subnet))?;
        raw_sets.push(("ipam".into(), vec![("ipam".into(), r)]));
    }
    raw_sets.extend(raw_range_sets(ipam, "ranges", "ipam.ranges")?);

    let mode = parse_mode(ipam)?;
    if raw_sets.is_empty() && mode == Mode::Standalone {
        return Err(CniError::invalid_config(
            "ipam.ranges",
            "no IP ranges specified (give ipam.ranges or ipam.subnet)",
        ));
    }
    let range_sets = canonical_sets(&raw_sets)?;

    let data_dir = match opt_str(ipam, "dataDir", "ipam.dataDir")? {
        None | Some("") => PathBuf::from(DEFAULT_DATA_DIR),
        Some(d) => PathBuf::from(d),
    };
    let resolv_conf = opt_str(ipam, "resolvConf", "ipam.resolvConf")?
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let reuse_delay = match ipam.get("reuseDelaySeconds") {
        None | Some(Value::Null) => DEFAULT_REUSE_DELAY_SECS,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_REUSE_DELAY_SECS => n,
            _ => {
                return Err(CniError::invalid_config(
                    "ipam.reuseDelaySeconds",
                    format!("must be an integer from 0 to {MAX_REUSE_DELAY_SECS}, got {v}"),
                ));
            }
        },
    };
    let routes = parse_routes(ipam)?;
    let ipam_type = opt_str(ipam, "type", "ipam.type")?.unwrap_or("").to_owned();

    let static_ips = static_requests(obj, runtime, cni_args_ips)?;

    Ok(NetConf {
        cni_version,
        ipam: IpamConfig {
            network,
            ipam_type,
            range_sets,
            routes,
            data_dir,
            resolv_conf,
            reuse_delay: Duration::from_secs(reuse_delay),
            mode,
        },
        static_ips,
        prev_result: obj.get("prevResult").filter(|v| !v.is_null()).cloned(),
        valid_attachments: obj.get("cni.dev/valid-attachments").cloned(),
        attachments_old: obj.get("cni.dev/attachments").cloned(),
    })
}

impl NetConf {
    /// The addresses `prevResult.ips[].address` lists (CHECK). Code 7 when prevResult is
    /// absent or malformed.
    pub fn prev_result_ips(&self) -> Result<Vec<IpAddr>, CniError> {
        let Some(prev) = &self.prev_result else {
            return Err(CniError::invalid_config(
                "prevResult",
                "CHECK needs the ADD result as prevResult",
            ));
        };
        let ips = match prev.get("ips") {
            None | Some(Value::Null) => return Ok(Vec::new()),
            Some(Value::Array(a)) => a,
            Some(_) => return Err(CniError::invalid_config("prevResult.ips", "must be a list")),
        };
        let mut out = Vec::with_capacity(ips.len());
        for (i, entry) in ips.iter().enumerate() {
            let path = format!("prevResult.ips[{i}].address");
            let addr = entry
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| CniError::invalid_config(&path, "missing or not a string"))?;
            let net: IpNet = addr.parse().map_err(|_| {
                CniError::invalid_config(&path, format!("{addr:?} is not an ip/prefix"))
            })?;
            out.push(net.addr());
        }
        Ok(out)
    }

    /// GC's keep-list: the union of `cni.dev/valid-attachments` and the older
    /// `cni.dev/attachments` (libcni sends both). Code 7 when neither is present, so a
    /// runtime bug cannot release a whole network.
    pub fn valid_attachments(&self) -> Result<Vec<(String, String)>, CniError> {
        if self.valid_attachments.is_none() && self.attachments_old.is_none() {
            return Err(CniError::invalid_config(
                "cni.dev/valid-attachments",
                "GC needs the list of valid attachments",
            ));
        }
        let mut out = Vec::new();
        for (key, v) in [
            ("cni.dev/valid-attachments", &self.valid_attachments),
            ("cni.dev/attachments", &self.attachments_old),
        ] {
            let list = match v {
                None | Some(Value::Null) => continue,
                Some(Value::Array(a)) => a,
                Some(_) => return Err(CniError::invalid_config(key, "must be a list")),
            };
            for (i, entry) in list.iter().enumerate() {
                let field = |f: &str| -> Result<String, CniError> {
                    entry
                        .get(f)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            CniError::invalid_config(
                                &format!("{key}[{i}].{f}"),
                                "missing or not a string",
                            )
                        })
                };
                let pair = (field("containerID")?, field("ifname")?);
                if !out.contains(&pair) {
                    out.push(pair);
                }
            }
        }
        Ok(out)
    }
}

/// A range as written, before defaults.
struct RawRange {
    subnet: String,
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    gateway: Option<IpAddr>,
}

fn opt_str<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a str>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(CniError::invalid_config(
            path,
            format!("must be a string, got {other}"),
        )),
    }
}

fn opt_obj<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(CniError::invalid_config(path, "must be an object")),
    }
}

fn opt_array<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a [Value], CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(CniError::invalid_config(path, "must be a list")),
    }
}

/// An optional IP field; `""` counts as absent, as Go's `net.IP` decodes it.
fn opt_ip(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<IpAddr>, CniError> {
    match opt_str(obj, key, path)? {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| CniError::invalid_config(path, format!("{s:?} is not an IP address"))),
    }
}

fn opt_int(obj: &Map<String, Value>, key: &str, path: &str) -> Result<Option<i64>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| CniError::invalid_config(path, format!("must be an integer, got {v}"))),
    }
}

fn raw_range(
    obj: &Map<String, Value>,
    path: &str,
    subnet: Option<&str>,
) -> Result<RawRange, CniError> {
    let subnet = match subnet {
        Some(s) => s.to_owned(),
        None => opt_str(obj, "subnet", &format!("{path}.subnet"))?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| CniError::invalid_config(&format!("{path}.subnet"), "missing"))?
            .to_owned(),
    };
    Ok(RawRange {
        subnet,
        start: opt_ip(obj, "rangeStart", &format!("{path}.rangeStart"))?,
        end: opt_ip(obj, "rangeEnd", &format!("{path}.rangeEnd"))?,
        gateway: opt_ip(obj, "gateway", &format!("{path}.gateway"))?,
    })
}

type RawSets = Vec<(String, Vec<(String, RawRange)>)>;

fn raw_range_sets(obj: &Map<String, Value>, key: &str, path: &str) -> Result<RawSets, CniError> {
    let mut out = Vec::new();
    for (i, set) in opt_array(obj, key, path)?.iter().enumerate() {
        let set_path = format!("{path}[{i}]");
        let Value::Array(ranges) = set else {
            return Err(CniError::invalid_config(
                &set_path,
                "must be a list of ranges",
            ));
        };
        let mut rs = Vec::with_capacity(ranges.len());
        for (j, r) in ranges.iter().enumerate() {
            let r_path = format!("{set_path}[{j}]");
            let Value::Object(m) = r else {
                return Err(CniError::invalid_config(&r_path, "must be an object"));
            };
            rs.push((r_path.clone(), raw_range(m, &r_path, None)?));
        }
        out.push((set_path, rs));
    }
    Ok(out)
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address `n` steps from `ip` (same family); callers stay inside a subnet.
fn offset(ip: IpAddr, up: bool) -> IpAddr {
    let n = to_u128(ip);
    let n = if up {
        n.wrapping_add(1)
    } else {
        n.wrapping_sub(1)
    };
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(n as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(n)),
    }
}

/// Canonicalises one range (host-local v1.1.1 defaults, kipam's stricter checks).
pub fn canonical_range(
    path: &str,
    subnet: &str,
    start: Option<IpAddr>,
    end: Option<IpAddr>,
    gateway: Option<IpAddr>,
) -> Result<Range, CniError> {
    let sub_path = format!("{path}.subnet");
    let net: IpNet = subnet
        .parse()
        .map_err(|_| CniError::invalid_config(&sub_path, format!("{subnet:?} is not a CIDR")))?;
    if net.prefix_len() + 2 > net.max_prefix_len() {
        return Err(CniError::invalid_config(
            &sub_path,
            format!("network {net} too small to allocate from"),
        ));
    }
    if net.addr() != net.network() {
        return Err(CniError::invalid_config(
            &sub_path,
            format!(
                "network {net} has host bits set; for a prefix length of {} the network address is {}",
                net.prefix_len(),
                net.network()
            ),
        ));
    }
    let network = net.network();
    let v4 = network.is_ipv4();
    let last = if v4 {
        offset(net.broadcast(), false)
    } else {
        net.broadcast()
    };
    let inside = |field: &str, ip: IpAddr| -> Result<(), CniError> {
        if !same_family(ip, network) {
            Err(CniError::invalid_config(
                &format!("{path}.{field}"),
                format!("{ip} is not of the same family as subnet {net}"),
            ))
        } else if !net.contains(&ip) {
            Err(CniError::invalid_config(
                &format!("{path}.{field}"),
                format!("{ip} not in network {net}"),
            ))
        } else {
            Ok(())
        }
    };
    let gateway = match gateway {
        None => offset(network, true),
        Some(g) => {
            inside("gateway", g)?;
            if g == network || (v4 && g == net.broadcast()) {
                return Err(CniError::invalid_config(
                    &format!("{path}.gateway"),
                    format!("{g} is the network or broadcast address of {net}"),
                ));
            }
            g
        }
    };
    let range_start = match start {
        None => offset(network, true),
        Some(s) => {
            inside("rangeStart", s)?;
            if s == network {
                offset(network, true)
            } else {
                s
            }
        }
    };
    let range_end = match end {
        None => last,
        Some(e) => {
            inside("rangeEnd", e)?;
            if v4 && e == net.broadcast() { last } else { e }
        }
    };
    if range_start > range_end {
        return Err(CniError::invalid_config(
            &format!("{path}.rangeEnd"),
            format!("range is empty: rangeEnd {range_end} is before rangeStart {range_start}"),
        ));
    }
    if range_start == range_end && range_start == gateway {
        return Err(CniError::invalid_config(
            path,
            format!("range {range_start}-{range_end} holds only its gateway"),
        ));
    }
    Ok(Range {
        subnet: net,
        range_start,
        range_end,
        gateway: Some(gateway),
    })
}

fn canonical_sets(raw: &RawSets) -> Result<Vec<Vec<Range>>, CniError> {
    let mut sets = Vec::with_capacity(raw.len());
    // (family is v6, start, end, path) of every range, for the overlap sweep.
    let mut all: Vec<(bool, IpAddr, IpAddr, &str)> = Vec::new();
    for (set_path, ranges) in raw {
        if ranges.is_empty() {
            return Err(CniError::invalid_config(set_path, "empty range set"));
        }
        let mut set = Vec::with_capacity(ranges.len());
        for (path, r) in ranges {
            let range = canonical_range(path, &r.subnet, r.start, r.end, r.gateway)?;
            if let Some(first) = set.first() {
                let first: &Range = first;
                if !same_family(first.range_start, range.range_start) {
                    return Err(CniError::invalid_config(
                        path,
                        format!(
                            "mixed address families in one range set ({} and {})",
                            first.subnet, range.subnet
                        ),
                    ));
                }
            }
            all.push((
                range.range_start.is_ipv6(),
                range.range_start,
                range.range_end,
                path,
            ));
            set.push(range);
        }
        sets.push(set);
    }
    // Sorting makes the overlap check O(n log n): a config near the 1 MiB cap can hold
    // tens of thousands of ranges.
    all.sort();
    let mut reach: Option<(bool, IpAddr, &str)> = None;
    for &(v6, start, end, path) in &all {
        if let Some((rv6, rend, rpath)) = reach
            && rv6 == v6
            && start <= rend
        {
            return Err(CniError::invalid_config(
                path,
                format!("range starting at {start} overlaps {rpath} (which reaches {rend})"),
            ));
        }
        if reach.is_none_or(|(rv6, rend, _)| rv6 != v6 || end > rend) {
            reach = Some((v6, end, path));
        }
    }
    Ok(sets)
}

fn parse_mode(ipam: &Map<String, Value>) -> Result<Mode, CniError> {
    let socket = opt_str(ipam, "daemonSocket", "ipam.daemonSocket")?;
    let pools_raw = opt_array(ipam, "pools", "ipam.pools")?;
    let mut pools = Vec::with_capacity(pools_raw.len());
    for (i, p) in pools_raw.iter().enumerate() {
        match p.as_str() {
            Some(s) if !s.is_empty() => pools.push(s.to_owned()),
            _ => {
                return Err(CniError::invalid_config(
                    &format!("ipam.pools[{i}]"),
                    "must be a non-empty pool name",
                ));
            }
        }
    }
    match socket {
        None => {
            if !pools.is_empty() {
                return Err(CniError::invalid_config(
                    "ipam.pools",
                    "pools are served by kipamd: set ipam.daemonSocket too",
                ));
            }
            Ok(Mode::Standalone)
        }
        Some(s) if s.starts_with('/') => Ok(Mode::Daemon {
            socket: PathBuf::from(s),
            pools,
        }),
        Some(s) => Err(CniError::invalid_config(
            "ipam.daemonSocket",
            format!("{s:?} must be an absolute path to kipamd's unix socket"),
        )),
    }
}

fn parse_routes(ipam: &Map<String, Value>) -> Result<Vec<Route>, CniError> {
    let mut out = Vec::new();
    for (i, r) in opt_array(ipam, "routes", "ipam.routes")?.iter().enumerate() {
        let path = format!("ipam.routes[{i}]");
        let Value::Object(m) = r else {
            return Err(CniError::invalid_config(&path, "must be an object"));
        };
        let dst_s = opt_str(m, "dst", &format!("{path}.dst"))?
            .ok_or_else(|| CniError::invalid_config(&format!("{path}.dst"), "missing"))?;
        let dst: IpNet = dst_s.parse().map_err(|_| {
            CniError::invalid_config(&format!("{path}.dst"), format!("{dst_s:?} is not a CIDR"))
        })?;
        let gw = opt_ip(m, "gw", &format!("{path}.gw"))?;
        if let Some(g) = gw
            && !same_family(g, dst.addr())
        {
            return Err(CniError::invalid_config(
                &format!("{path}.gw"),
                format!("{g} is not of the same family as dst {dst}"),
            ));
        }
        out.push(Route {
            dst,
            gw,
            mtu: opt_int(m, "mtu", &format!("{path}.mtu"))?,
            advmss: opt_int(m, "advmss", &format!("{path}.advmss"))?,
            priority: opt_int(m, "priority", &format!("{path}.priority"))?,
            table: opt_int(m, "table", &format!("{path}.table"))?,
            scope: opt_int(m, "scope", &format!("{path}.scope"))?,
        });
    }
    Ok(out)
}

fn ip_list(list: &[Value], path: &str) -> Result<Vec<IpAddr>, CniError> {
    list.iter()
        .enumerate()
        .map(|(i, v)| {
            let p = format!("{path}[{i}]");
            let s = v
                .as_str()
                .ok_or_else(|| CniError::invalid_config(&p, "must be a string"))?;
            parse_ip_request(s)
                .ok_or_else(|| CniError::invalid_config(&p, format!("{s:?} is not an IP address")))
        })
        .collect()
}

fn static_requests(
    obj: &Map<String, Value>,
    runtime: Option<&Map<String, Value>>,
    cni_args_ips: &[IpAddr],
) -> Result<Vec<IpAddr>, CniError> {
    let mut ips = Vec::new();
    if let Some(rt) = runtime {
        ips.extend(ip_list(
            opt_array(rt, "ips", "runtimeConfig.ips")?,
            "runtimeConfig.ips",
        )?);
    }
    let args_ips = match opt_obj(obj, "args", "args")? {
        Some(args) => match opt_obj(args, "cni", "args.cni")? {
            Some(cni) => ip_list(opt_array(cni, "ips", "args.cni.ips")?, "args.cni.ips")?,
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    if args_ips.is_empty() {
        ips.extend_from_slice(cni_args_ips);
    } else {
        ips.extend(args_ips);
    }
    let mut seen = Vec::with_capacity(ips.len());
    for ip in ips {
        if !seen.contains(&ip) {
            seen.push(ip);
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn conf(ipam: Value) -> Vec<u8> {
        json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge", "ipam": ipam})
            .to_string()
            .into_bytes()
    }

    fn err(ipam: Value) -> CniError {
        parse(&conf(ipam), &[]).expect_err("should be refused")
    }

    #[test]
    fn host_local_defaults_v4() {
        let c = parse(
            &conf(json!({"type": "kipam", "subnet": "192.0.2.0/25"})),
            &[],
        )
        .expect("valid");
        assert_eq!(
            c.ipam.range_sets,
            vec![vec![Range {
                subnet: "192.0.2.0/25".parse().expect("net"),
                range_start: ip("192.0.2.1"),
                range_end: ip("192.0.2.126"),
                gateway: Some(ip("192.0.2.1")),
            }]]
        );
        assert_eq!(c.ipam.data_dir, PathBuf::from("/var/lib/kipam"));
        assert_eq!(c.ipam.reuse_delay, Duration::from_secs(30));
        assert_eq!(c.ipam.mode, Mode::Standalone);
        assert_eq!(c.ipam.network, "net1");
    }

    #[test]
    fn host_local_defaults_v6() {
        let c = parse(
            &conf(json!({"ranges": [[{"subnet": "2001:db8:1::/64"}]]})),
            &[],
        )
        .expect("valid");
        let r = &c.ipam.range_sets[0][0];
        assert_eq!(r.range_start, ip("2001:db8:1::1"));
        assert_eq!(r.range_end, ip("2001:db8:1::ffff:ffff:ffff:ffff"));
        assert_eq!(r.gateway, Some(ip("2001:db8:1::1")));
    }

    #[test]
    fn explicit_values_kept_and_ends_narrowed() {
        let c = parse(
            &conf(json!({"ranges": [[{"subnet": "10.99.1.0/24", "rangeStart": "10.99.1.0",
                "rangeEnd": "10.99.1.255", "gateway": "10.99.1.254"}],
                [{"subnet": "10.99.2.0/24", "rangeStart": "10.99.2.10", "rangeEnd": "10.99.2.20"}]]})),
            &[],
        )
        .expect("valid");
        let r = &c.ipam.range_sets[0][0];
        assert_eq!(
            (r.range_start, r.range_end),
            (ip("10.99.1.1"), ip("10.99.1.254"))
        );
        assert_eq!(r.gateway, Some(ip("10.99.1.254")));
        let r = &c.ipam.range_sets[1][0];
        assert_eq!(
            (r.range_start, r.range_end),
            (ip("10.99.2.10"), ip("10.99.2.20"))
        );
        assert_eq!(r.gateway, Some(ip("10.99.2.1")));
    }

    #[test]
    fn shorthand_and_runtime_ranges_are_prepended() {
        let c = parse(
            &json!({"cniVersion": "0.4.0", "name": "n",
                "runtimeConfig": {"ipRanges": [[{"subnet": "10.99.3.0/24"}]]},
                "ipam": {"subnet": "10.99.1.0/24", "rangeStart": "10.99.1.5",
                         "ranges": [[{"subnet": "10.99.2.0/24"}]]}})
            .to_string()
            .into_bytes(),
            &[],
        )
        .expect("valid");
        let subnets: Vec<String> = c
            .ipam
            .range_sets
            .iter()
            .map(|s| s[0].subnet.to_string())
            .collect();
        assert_eq!(subnets, ["10.99.3.0/24", "10.99.1.0/24", "10.99.2.0/24"]);
        assert_eq!(c.ipam.range_sets[1][0].range_start, ip("10.99.1.5"));
    }

    #[test]
    fn refusals_name_the_field() {
        let cases = [
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/33"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "nope"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/31"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.5/24"}]]}),
                "ipam.ranges[0][0].subnet",
            ),
            (json!({"ranges": [[{}]]}), "ipam.ranges[0][0].subnet"),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.1.1"}]]}),
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.50", "rangeEnd": "10.0.0.40"}]]}),
                "ipam.ranges[0][0].rangeEnd",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "fd00::1"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.1.1"}]]}),
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.255"}]]}),
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "gateway": "10.0.0.0"}]]}),
                "ipam.ranges[0][0].gateway",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}]]}),
                "ipam.ranges[0][0]",
            ),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "x"}]]}),
                "ipam.ranges[0][0].rangeStart",
            ),
            (json!({"ranges": [[]]}), "ipam.ranges[0]"),
            (json!({"ranges": [{}]}), "ipam.ranges[0]"),
            (json!({"ranges": {}}), "ipam.ranges"),
            (json!({"ranges": [[5]]}), "ipam.ranges[0][0]"),
            (
                json!({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00:10:99::/64"}]]}),
                "ipam.ranges[0][1]",
            ),
            (json!({}), "ipam.ranges"),
            (json!({"ranges": []}), "ipam.ranges"),
            (json!({"subnet": 5}), "ipam.subnet"),
            (
                json!({"subnet": "10.0.0.0/24", "dataDir": 1}),
                "ipam.dataDir",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "reuseDelaySeconds": -1}),
                "ipam.reuseDelaySeconds",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "reuseDelaySeconds": "5"}),
                "ipam.reuseDelaySeconds",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "reuseDelaySeconds": 86401}),
                "ipam.reuseDelaySeconds",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"gw": "10.0.0.1"}]}),
                "ipam.routes[0].dst",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "gw": "fd00::1"}]}),
                "ipam.routes[0].gw",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "routes": [{"dst": "0.0.0.0/0", "mtu": "x"}]}),
                "ipam.routes[0].mtu",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "daemonSocket": "run/k.sock"}),
                "ipam.daemonSocket",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "pools": ["a"]}),
                "ipam.pools",
            ),
            (
                json!({"subnet": "10.0.0.0/24", "daemonSocket": "/run/k.sock", "pools": [""]}),
                "ipam.pools[0]",
            ),
        ];
        for (ipam, field) in cases {
            let e = err(ipam.clone());
            assert_eq!(e.code, 7, "{ipam}: {e}");
            assert_eq!(
                e.msg,
                format!("invalid network config: {field}"),
                "{ipam}: {e}"
            );
        }
    }

    #[test]
    fn overlaps_within_and_across_sets() {
        let e = err(
            json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.100"},
            {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}]]}),
        );
        assert!(e.msg.contains("ipam.ranges[0][1]"), "{e}");
        assert!(e.details.contains("ipam.ranges[0][0]"), "{e}");
        let e = err(json!({"ranges": [[{"subnet": "10.0.0.0/16"}], [{"subnet": "10.0.5.0/24"}]]}));
        assert!(e.msg.contains("ipam.ranges[1][0]"), "{e}");
        let e = err(json!({"subnet": "10.0.0.0/24", "ranges": [[{"subnet": "10.0.0.0/24"}]]}));
        assert!(
            e.msg.contains("ipam.ranges[0][0]") || e.details.contains("ipam"),
            "{e}"
        );
        // Adjacent ranges in one subnet, and a v4 and a v6 set, are fine.
        assert!(
            parse(
                &conf(
                    json!({"ranges": [[{"subnet": "10.0.0.0/24", "rangeEnd": "10.0.0.99"},
                {"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.100"}],
                [{"subnet": "fd00:10:99::/64"}]]})
                ),
                &[]
            )
            .is_ok()
        );
        // A range nested in an earlier long one is caught even with a gap-free sort.
        let e = err(
            json!({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.20", "rangeEnd": "10.0.0.30"}],
            [{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.40", "rangeEnd": "10.0.0.50"}]]}),
        );
        assert_eq!(e.code, 7);
    }

    #[test]
    fn decode_failures_are_code_6() {
        for bad in [&b""[..], b"{", b"[]", b"null", b"\"x\"", b"\xff\xfe"] {
            assert_eq!(parse(bad, &[]).map_err(|e| e.code).err(), Some(6));
        }
        let deep = "[".repeat(100_000);
        assert_eq!(
            parse(deep.as_bytes(), &[]).map_err(|e| e.code).err(),
            Some(6)
        );
        let huge = vec![b' '; MAX_STDIN + 1];
        let e = parse(&huge, &[]).expect_err("too big");
        assert_eq!(e.code, 6);
        assert!(e.details.contains("larger than"));
    }

    #[test]
    fn preflight_name_then_version() {
        let e = parse(br#"{"cniVersion":"1.0.0","ipam":{}}"#, &[]).expect_err("no name");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (7, "invalid network config: name")
        );
        let e = parse(br#"{"cniVersion":"1.0.0","name":"-x","ipam":{}}"#, &[]).expect_err("bad");
        assert_eq!(e.code, 7);
        let e = parse(br#"{"cniVersion":"0.2.0","name":"x","ipam":{}}"#, &[]).expect_err("ver");
        assert_eq!(e.code, 1);
        let e = parse(br#"{"name":"x","ipam":{}}"#, &[]).expect_err("no version");
        assert_eq!(e.code, 1);
        let e = parse(br#"{"cniVersion":"1.0.0","name":"x"}"#, &[]).expect_err("no ipam");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (7, "invalid network config: ipam")
        );
    }

    #[test]
    fn every_version_accepted() {
        for v in crate::version::SUPPORTED {
            let c = parse(
                &json!({"cniVersion": v.as_str(), "name": "n", "ipam": {"subnet": "10.0.0.0/24"}})
                    .to_string()
                    .into_bytes(),
                &[],
            )
            .expect("valid");
            assert_eq!(c.cni_version, v);
        }
    }

    #[test]
    fn routes_pass_through() {
        let c = parse(
            &conf(json!({"subnet": "10.0.0.0/24", "routes": [
                {"dst": "0.0.0.0/0", "gw": "10.0.0.1"},
                {"dst": "192.168.0.5/16", "mtu": 1400, "advmss": 1360, "priority": 5, "table": 100, "scope": 253}]})),
            &[],
        )
        .expect("valid");
        assert_eq!(c.ipam.routes.len(), 2);
        assert_eq!(c.ipam.routes[0].gw, Some(ip("10.0.0.1")));
        assert_eq!(c.ipam.routes[1].dst.to_string(), "192.168.0.5/16");
        assert_eq!(
            (
                c.ipam.routes[1].mtu,
                c.ipam.routes[1].table,
                c.ipam.routes[1].scope
            ),
            (Some(1400), Some(100), Some(253))
        );
    }

    #[test]
    fn static_request_precedence() {
        let base = json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"}});
        let env_ips = [ip("10.0.0.7")];
        let c = parse(base.to_string().as_bytes(), &env_ips).expect("valid");
        assert_eq!(c.static_ips, env_ips);
        let mut with_args = base.clone();
        with_args["args"] = json!({"cni": {"ips": ["10.0.0.8/24"]}});
        with_args["runtimeConfig"] = json!({"ips": ["10.0.0.9", "10.0.0.8"]});
        let c = parse(with_args.to_string().as_bytes(), &env_ips).expect("valid");
        assert_eq!(c.static_ips, [ip("10.0.0.9"), ip("10.0.0.8")]);
        let mut bad = base.clone();
        bad["runtimeConfig"] = json!({"ips": ["10.0.0.300"]});
        let e = parse(bad.to_string().as_bytes(), &[]).expect_err("bad ip");
        assert_eq!(e.msg, "invalid network config: runtimeConfig.ips[0]");
    }

    #[test]
    fn daemon_mode_parsed() {
        let c = parse(
            &conf(
                json!({"daemonSocket": "/run/kipam/kipamd.sock", "pools": ["pods-v4", "pods-v6"]}),
            ),
            &[],
        )
        .expect("valid");
        assert_eq!(
            c.ipam.mode,
            Mode::Daemon {
                socket: PathBuf::from("/run/kipam/kipamd.sock"),
                pools: vec!["pods-v4".into(), "pods-v6".into()]
            }
        );
        assert!(c.ipam.range_sets.is_empty());
    }

    #[test]
    fn prev_result_and_attachments() {
        let mut v = json!({"cniVersion": "1.1.0", "name": "n", "ipam": {"subnet": "10.0.0.0/24"}});
        let c = parse(v.to_string().as_bytes(), &[]).expect("valid");
        assert_eq!(c.prev_result_ips().map_err(|e| e.code), Err(7));
        assert_eq!(c.valid_attachments().map_err(|e| e.code), Err(7));
        v["prevResult"] = json!({"cniVersion": "1.1.0", "interfaces": [{"name": "eth0"}],
            "ips": [{"address": "10.0.0.2/24", "interface": 0}, {"address": "fd00:10:99::2/64"}]});
        v["cni.dev/valid-attachments"] = json!([{"containerID": "a", "ifname": "eth0"}]);
        v["cni.dev/attachments"] =
            json!([{"containerID": "a", "ifname": "eth0"}, {"containerID": "b", "ifname": "net1"}]);
        let c = parse(v.to_string().as_bytes(), &[]).expect("valid");
        assert_eq!(
            c.prev_result_ips(),
            Ok(vec![ip("10.0.0.2"), ip("fd00:10:99::2")])
        );
        assert_eq!(
            c.valid_attachments(),
            Ok(vec![
                ("a".into(), "eth0".into()),
                ("b".into(), "net1".into())
            ])
        );
        v["cni.dev/valid-attachments"] = Value::Null;
        v.as_object_mut().map(|m| m.remove("cni.dev/attachments"));
        let c = parse(v.to_string().as_bytes(), &[]).expect("valid");
        assert_eq!(c.valid_attachments(), Ok(vec![]));
        v["prevResult"] = json!({"ips": [{"address": "10.0.0.2"}]});
        let c = parse(v.to_string().as_bytes(), &[]).expect("valid");
        assert_eq!(
            c.prev_result_ips().map_err(|e| e.msg),
            Err("invalid network config: prevResult.ips[0].address".into())
        );
    }

    #[test]
    fn many_ranges_validate_quickly() {
        let sets: Vec<Value> = (0..20_000u32)
            .map(|i| json!([{"subnet": format!("10.{}.{}.0/24", i / 256, i % 256)}]))
            .collect();
        let start = std::time::Instant::now();
        let c = parse(&conf(json!({"ranges": sets})), &[]).expect("valid");
        assert_eq!(c.ipam.range_sets.len(), 20_000);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            prop_oneof![
                "[0-9.:/a-f]{0,20}",
                Just("10.0.0.0/24".to_string()),
                Just("fd00:10:99::/64".to_string()),
                Just("10.0.0.5".to_string()),
                Just("1.1.0".to_string()),
                Just("0.4.0".to_string()),
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("cniVersion".to_string()),
                            Just("name".to_string()),
                            Just("ipam".to_string()),
                            Just("ranges".to_string()),
                            Just("subnet".to_string()),
                            Just("rangeStart".to_string()),
                            Just("rangeEnd".to_string()),
                            Just("gateway".to_string()),
                            Just("routes".to_string()),
                            Just("runtimeConfig".to_string()),
                            Just("ips".to_string()),
                            Just("ipRanges".to_string()),
                            Just("args".to_string()),
                            Just("cni".to_string()),
                            Just("reuseDelaySeconds".to_string()),
                            Just("prevResult".to_string()),
                            "[a-z]{1,8}",
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, &[]);
        }

        #[test]
        fn random_json_never_panics(v in arb_json()) {
            if let Ok(c) = parse(v.to_string().as_bytes(), &[]) {
                let _ = c.prev_result_ips();
                let _ = c.valid_attachments();
            }
        }

        #[test]
        fn random_ranges_canonicalise_or_refuse(
            a in any::<u32>(), p in 0u8..=32, s in proptest::option::of(any::<u32>()),
            e in proptest::option::of(any::<u32>()), g in proptest::option::of(any::<u32>())
        ) {
            let v4 = |n: u32| IpAddr::V4(Ipv4Addr::from(n));
            let subnet = format!("{}/{}", Ipv4Addr::from(a), p);
            if let Ok(r) = canonical_range("r", &subnet, s.map(v4), e.map(v4), g.map(v4)) {
                prop_assert!(r.range_start <= r.range_end);
                prop_assert!(r.subnet.contains(&r.range_start) && r.subnet.contains(&r.range_end));
                prop_assert!(r.range_start != r.subnet.network());
                prop_assert!(r.range_end != r.subnet.broadcast());
            }
        }
    }
}
