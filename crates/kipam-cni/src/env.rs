//! The `CNI_*` environment: which verb, which attachment, and the `CNI_ARGS` pairs.
//!
//! The runtime passes the per-call parameters in environment variables (the network
//! config arrives on stdin, see `config`). Validation follows the spec and the Go skel:
//! a container ID matching `^[A-Za-z0-9][A-Za-z0-9_.-]*$`, an interface name under 16
//! characters that is not `.`/`..` and has no `/`, `:` or whitespace. Which variables
//! are required depends on the verb; kipam follows the spec here rather than the Go skel
//! and does not insist on `CNI_PATH` except for GC (an IPAM plugin never delegates).
//! Every failure is code 4 and names the variable.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::error::CniError;

/// The CNI verb from `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Allocate addresses for an attachment.
    Add,
    /// Release an attachment's addresses.
    Del,
    /// Verify an attachment's reservation.
    Check,
    /// Report supported spec versions.
    Version,
    /// Release everything not in the valid-attachments list (1.1).
    Gc,
    /// Report whether an ADD could be served (1.1).
    Status,
}

impl Command {
    /// Parses the value of `CNI_COMMAND` (exact, upper case, as the spec writes it).
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            _ => return None,
        })
    }

    /// The variables the spec requires for this verb, besides `CNI_COMMAND`.
    pub fn required_vars(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Version | Command::Status => &[],
        }
    }

    /// Whether the verb addresses one attachment (and so reads `CNI_ARGS`).
    pub fn has_attachment(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

/// What `CNI_ARGS` carries that kipam uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IgnoreUnknown=1|true`: unknown keys are accepted instead of refused.
    pub ignore_unknown: bool,
    /// `K8S_POD_NAMESPACE`.
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME`.
    pub pod_name: Option<String>,
    /// `K8S_POD_UID`.
    pub pod_uid: Option<String>,
    /// `K8S_POD_INFRA_CONTAINER_ID`.
    pub infra_container_id: Option<String>,
    /// `IP=a[,b]`: static requests, each `ip` or `ip/prefix` (the prefix is ignored).
    pub ips: Vec<IpAddr>,
}

/// The validated environment of one invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// The verb.
    pub command: Command,
    /// `CNI_CONTAINERID` (validated when the verb needs it).
    pub container_id: String,
    /// `CNI_NETNS`, empty when absent (DEL may come without one).
    pub netns: String,
    /// `CNI_IFNAME` (validated when the verb needs it).
    pub ifname: String,
    /// Parsed `CNI_ARGS` (empty for verbs without an attachment).
    pub args: CniArgs,
    /// `CNI_PATH` split on `:`, empty entries dropped.
    pub path: Vec<String>,
}

/// Reads and validates the environment for the verb in `CNI_COMMAND`.
pub fn parse(vars: &HashMap<String, String>) -> Result<Env, CniError> {
    let get = |k: &str| vars.get(k).map(String::as_str).unwrap_or("");
    let cmd_raw = get("CNI_COMMAND");
    if cmd_raw.is_empty() {
        return Err(CniError::missing_env(&["CNI_COMMAND"]));
    }
    let command = Command::parse(cmd_raw).ok_or_else(|| {
        CniError::invalid_env("CNI_COMMAND", format!("unknown CNI_COMMAND: {cmd_raw:?}"))
    })?;
    let missing: Vec<&str> = command
        .required_vars()
        .iter()
        .copied()
        .filter(|k| get(k).is_empty())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::missing_env(&missing));
    }
    let container_id = get("CNI_CONTAINERID").to_owned();
    let ifname = get("CNI_IFNAME").to_owned();
    let mut args = CniArgs::default();
    if command.has_attachment() {
        validate_container_id(&container_id)?;
        validate_ifname(&ifname)?;
        args = parse_cni_args(get("CNI_ARGS"))?;
    }
    Ok(Env {
        command,
        container_id,
        netns: get("CNI_NETNS").to_owned(),
        ifname,
        args,
        path: get("CNI_PATH")
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Whether `s` matches the spec's identifier pattern `^[A-Za-z0-9][A-Za-z0-9_.-]*$`,
/// used for container IDs and network names.
pub fn is_cni_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Validates `CNI_CONTAINERID`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_cni_identifier(id) {
        Ok(())
    } else {
        Err(CniError::invalid_env(
            "CNI_CONTAINERID",
            format!("{id:?} must match ^[A-Za-z0-9][A-Za-z0-9_.-]*$"),
        ))
    }
}

/// Validates `CNI_IFNAME` by the rules of the 0.4.0 text (as the Go skel enforces them).
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    let problem = if name.is_empty() {
        Some("interface name is empty")
    } else if name.len() > 15 {
        Some("interface name must be shorter than 16 characters")
    } else if name == "." || name == ".." {
        Some("interface name is . or ..")
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("interface name contains / or : or whitespace")
    } else {
        None
    };
    match problem {
        Some(p) => Err(CniError::invalid_env(
            "CNI_IFNAME",
            format!("{p}: {name:?}"),
        )),
        None => Ok(()),
    }
}

/// Parses one static address request: `ip` or `ip/prefix` (the prefix is ignored, as
/// host-local does; the range's prefix is what the result carries).
pub fn parse_ip_request(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    let ip = s.split_once('/').map_or(
        s,
        |(ip, prefix)| {
            if prefix.parse::<u8>().is_ok() { ip } else { "" }
        },
    );
    ip.parse().ok()
}

/// Parses `CNI_ARGS` (`K=V;K2=V2`) with the Go `types.LoadArgs` semantics: unknown keys
/// are an error unless `IgnoreUnknown` is `1`/`true`, wherever it appears. Empty
/// segments (a trailing `;`) are tolerated.
pub fn parse_cni_args(raw: &str) -> Result<CniArgs, CniError> {
    let bad = |d: String| CniError::invalid_env("CNI_ARGS", d);
    let mut pairs = Vec::new();
    for seg in raw.split(';').filter(|s| !s.is_empty()) {
        let (k, v) = seg
            .split_once('=')
            .ok_or_else(|| bad(format!("invalid pair {seg:?}: expected K=V")))?;
        pairs.push((k, v));
    }
    let mut out = CniArgs::default();
    for (k, v) in &pairs {
        if *k == "IgnoreUnknown" {
            out.ignore_unknown = match v.to_ascii_lowercase().as_str() {
                "1" | "true" => true,
                "0" | "false" => false,
                _ => {
                    return Err(bad(format!(
                        "IgnoreUnknown={v:?}: expected 1, 0, true or false"
                    )));
                }
            };
        }
    }
    let some = |v: &str| (!v.is_empty()).then(|| v.to_owned());
    let mut unknown = Vec::new();
    for (k, v) in pairs {
        match k {
            "IgnoreUnknown" => {}
            "K8S_POD_NAMESPACE" => out.pod_namespace = some(v),
            "K8S_POD_NAME" => out.pod_name = some(v),
            "K8S_POD_UID" => out.pod_uid = some(v),
            "K8S_POD_INFRA_CONTAINER_ID" => out.infra_container_id = some(v),
            "IP" => {
                out.ips.clear();
                for part in v.split(',').filter(|p| !p.trim().is_empty()) {
                    let ip = parse_ip_request(part)
                        .ok_or_else(|| bad(format!("IP={v:?}: {part:?} is not an IP address")))?;
                    out.ips.push(ip);
                }
            }
            other => unknown.push(other),
        }
    }
    if !unknown.is_empty() && !out.ignore_unknown {
        return Err(bad(format!(
            "unknown args {unknown:?} (set IgnoreUnknown=1 to accept them)"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn full(cmd: &str) -> HashMap<String, String> {
        vars(&[
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/var/run/netns/x"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ])
    }

    #[test]
    fn commands() {
        for (s, c) in [
            ("ADD", Command::Add),
            ("DEL", Command::Del),
            ("CHECK", Command::Check),
            ("VERSION", Command::Version),
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
        ] {
            assert_eq!(Command::parse(s), Some(c));
            assert_eq!(parse(&full(s)).map(|e| e.command), Ok(c));
        }
        assert_eq!(Command::parse("add"), None);
        let e = parse(&vars(&[("CNI_COMMAND", "FOO")])).expect_err("unknown");
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_COMMAND"));
        let e = parse(&vars(&[])).expect_err("missing");
        assert!(e.msg.contains("CNI_COMMAND"));
    }

    #[test]
    fn required_per_verb() {
        let e = parse(&vars(&[("CNI_COMMAND", "ADD")])).expect_err("missing");
        assert_eq!(e.code, 4);
        assert!(
            e.msg.contains("CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME"),
            "{}",
            e.msg
        );
        let e = parse(&vars(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "a")]))
            .expect_err("missing ifname");
        assert!(e.msg.contains("[CNI_IFNAME]"));
        // DEL without a netns is fine.
        let ok = parse(&vars(&[
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "a"),
            ("CNI_IFNAME", "eth0"),
        ]))
        .expect("DEL without netns");
        assert_eq!(ok.netns, "");
        let e = parse(&vars(&[("CNI_COMMAND", "GC")])).expect_err("GC needs CNI_PATH");
        assert!(e.msg.contains("CNI_PATH"));
        assert!(parse(&vars(&[("CNI_COMMAND", "STATUS")])).is_ok());
        assert!(parse(&vars(&[("CNI_COMMAND", "VERSION")])).is_ok());
        assert_eq!(
            parse(&full("ADD")).map(|e| e.path),
            Ok(vec!["/opt/cni/bin".to_string(), "/usr/lib/cni".to_string()])
        );
    }

    #[test]
    fn container_id_pattern() {
        for ok in ["a", "0", "abc-DEF_1.2", "f".repeat(200).as_str()] {
            assert!(validate_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", ".a", "a b", "a/b", "a:b", "é"] {
            let e = validate_container_id(bad).expect_err(bad);
            assert!(e.msg.contains("CNI_CONTAINERID"));
        }
        let mut v = full("ADD");
        v.insert("CNI_CONTAINERID".into(), "bad id".into());
        assert_eq!(parse(&v).map_err(|e| e.code), Err(4));
    }

    #[test]
    fn ifname_rules() {
        for ok in ["eth0", "a", "123456789012345", "net1.100"] {
            assert!(validate_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "1234567890123456",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
        ] {
            let e = validate_ifname(bad).expect_err(bad);
            assert_eq!(e.code, 4);
            assert!(e.msg.contains("CNI_IFNAME"));
        }
    }

    #[test]
    fn cni_args_known_and_unknown() {
        let a = parse_cni_args(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=p;K8S_POD_UID=u;K8S_POD_INFRA_CONTAINER_ID=c;X=y",
        )
        .expect("ok");
        assert!(a.ignore_unknown);
        assert_eq!(a.pod_namespace.as_deref(), Some("ns"));
        assert_eq!(a.pod_name.as_deref(), Some("p"));
        assert_eq!(a.pod_uid.as_deref(), Some("u"));
        assert_eq!(a.infra_container_id.as_deref(), Some("c"));
        // IgnoreUnknown applies wherever it stands.
        assert!(parse_cni_args("X=y;IgnoreUnknown=true").is_ok());
        let e = parse_cni_args("K8S_POD_NAME=p;X=y").expect_err("unknown key");
        assert_eq!(e.code, 4);
        assert!(e.msg.contains("CNI_ARGS") && e.details.contains("X"));
        assert!(parse_cni_args("IgnoreUnknown=0;X=y").is_err());
        assert!(parse_cni_args("IgnoreUnknown=yes").is_err());
        assert!(parse_cni_args("novalue").is_err());
        assert_eq!(parse_cni_args(""), Ok(CniArgs::default()));
        assert!(parse_cni_args("K8S_POD_NAME=p;").is_ok());
    }

    #[test]
    fn cni_args_static_ips() {
        let a = parse_cni_args("IP=10.1.2.3").expect("one");
        assert_eq!(a.ips, vec!["10.1.2.3".parse::<IpAddr>().expect("ip")]);
        let a = parse_cni_args("IP=10.1.2.3/24,fd00:10:99::5").expect("two");
        assert_eq!(a.ips.len(), 2);
        assert!(parse_cni_args("IP=10.1.2.300").is_err());
        assert!(parse_cni_args("IP=10.1.2.3/x").is_err());
        let e = parse_cni_args("IP=nope").expect_err("bad");
        assert!(e.details.contains("nope"));
    }

    #[test]
    fn args_ignored_for_gc_and_status() {
        let mut v = vars(&[("CNI_COMMAND", "STATUS"), ("CNI_ARGS", "garbage")]);
        assert!(parse(&v).is_ok());
        v.insert("CNI_COMMAND".into(), "ADD".into());
        v.extend(full("ADD"));
        v.insert("CNI_ARGS".into(), "garbage".into());
        assert!(parse(&v).is_err());
    }

    proptest! {
        #[test]
        fn cni_args_never_panic(s in "\\PC*") {
            let _ = parse_cni_args(&s);
        }

        #[test]
        fn cni_args_structured_never_panic(
            pairs in proptest::collection::vec(("[A-Za-z_0-9]{0,12}", "[ -~]{0,20}"), 0..8)
        ) {
            let s: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = parse_cni_args(&s.join(";"));
        }
    }
}
