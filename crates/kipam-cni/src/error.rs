//! The one error type of the plugin and its wire form.
//!
//! A CNI plugin reports failure by exiting non-zero and printing
//! `{"cniVersion", "code", "msg", "details"}` on stdout (the runtime parses it; stderr is
//! only for logs). Every failure in this crate is therefore a [`CniError`] carrying the
//! spec's numeric code, so nothing has to be translated at the edge. Codes 0–99 are the
//! spec's; the plugin's own codes (≥ 100) are listed in [`codes`] and in `docs/cni.md`.

use serde::Serialize;

/// Numeric error codes: the spec's (0–99) and kipam's own (≥ 100).
///
/// | code | name | meaning |
/// |---|---|---|
/// | 1 | `INCOMPATIBLE_VERSION` | `cniVersion` not supported, or the verb needs a newer one |
/// | 2 | `UNSUPPORTED_FIELD` | a config field kipam does not support (names key and value) |
/// | 3 | `UNKNOWN_CONTAINER` | the container / attachment does not exist |
/// | 4 | `INVALID_ENV` | a `CNI_*` environment variable is missing or malformed (named) |
/// | 5 | `IO_FAILURE` | reading stdin, `resolvConf`, or the store failed |
/// | 6 | `DECODE_FAILURE` | stdin is not JSON (or is larger than 1 MiB) |
/// | 7 | `INVALID_CONFIG` | the network config is invalid (the field is named) |
/// | 11 | `TRY_AGAIN` | the store stayed busy beyond the bounded wait; retry |
/// | 50 | `STATUS_UNAVAILABLE` | STATUS: an ADD cannot be served now |
/// | 51 | `STATUS_DEGRADED` | STATUS: not available, existing containers may be degraded |
/// | 100 | `RANGE_EXHAUSTED` | a range set has no free address |
/// | 101 | `ADDRESS_UNAVAILABLE` | a statically requested address is held by someone else |
/// | 102 | `STORE_CORRUPT` | the store failed its integrity or schema check |
/// | 103 | `ADDRESS_NOT_IN_RANGE` | a static request lies outside every range, is a gateway, or two requests hit one range set |
/// | 104 | `RESERVATION_MISMATCH` | CHECK: the attachment holds nothing, or not what `prevResult` says |
/// | 105 | `DAEMON_UNAVAILABLE` | daemon mode (`daemonSocket`) cannot be served |
/// | 106 | `GC_INCOMPLETE` | GC released what it could; some releases failed (listed in details) |
/// | 107 | `STORE_TOO_NEW` | the store was written by a newer kipam (schema version) |
pub mod codes {
    /// Spec: incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Spec: unsupported field in network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Spec: container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Spec: invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// Spec: I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Spec: failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Spec: invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Spec: try again later.
    pub const TRY_AGAIN: u32 = 11;
    /// Spec (STATUS): plugin not available.
    pub const STATUS_UNAVAILABLE: u32 = 50;
    /// Spec (STATUS): plugin not available, existing containers may be degraded.
    pub const STATUS_DEGRADED: u32 = 51;
    /// kipam: no free address left in a range set.
    pub const RANGE_EXHAUSTED: u32 = 100;
    /// kipam: a statically requested address is held by another attachment.
    pub const ADDRESS_UNAVAILABLE: u32 = 101;
    /// kipam: the store failed its integrity or schema check.
    pub const STORE_CORRUPT: u32 = 102;
    /// kipam: a static request is outside the ranges, a gateway, or ambiguous.
    pub const ADDRESS_NOT_IN_RANGE: u32 = 103;
    /// kipam: CHECK found no reservation or a different one than `prevResult`.
    pub const RESERVATION_MISMATCH: u32 = 104;
    /// kipam: daemon mode cannot be served.
    pub const DAEMON_UNAVAILABLE: u32 = 105;
    /// kipam: GC could not release everything it should have.
    pub const GC_INCOMPLETE: u32 = 106;
    /// kipam: the store's schema is newer than this binary understands.
    pub const STORE_TOO_NEW: u32 = 107;
}

/// A failure as the CNI spec models it: a numeric code, a short message and details.
///
/// `Display` joins message and details, for logs on stderr.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg}{}", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The spec's code (0–99) or a plugin code (≥ 100), see [`codes`].
    pub code: u32,
    /// A short, stable description of the kind of failure.
    pub msg: String,
    /// The specifics: which field, which value, which address.
    pub details: String,
}

/// The error JSON printed on stdout, field order as in the spec's example.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "cniVersion", skip_serializing_if = "Option::is_none")]
    cni_version: Option<&'a str>,
    code: u32,
    msg: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    details: &'a str,
}

impl CniError {
    /// An error with any code.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// Code 1: the config's `cniVersion` is not supported, or the verb needs a newer one.
    pub fn incompatible_version(msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self::new(codes::INCOMPATIBLE_VERSION, msg, details)
    }

    /// Code 2: a field kipam does not support; the message names the key and the value.
    pub fn unsupported_field(key: &str, value: &str) -> Self {
        Self::new(
            codes::UNSUPPORTED_FIELD,
            format!("unsupported field {key}={value}"),
            "",
        )
    }

    /// Code 3: the container or attachment is unknown.
    pub fn unknown_container(details: impl Into<String>) -> Self {
        Self::new(codes::UNKNOWN_CONTAINER, "container unknown", details)
    }

    /// Code 4: an environment variable is missing or malformed; `var` names it.
    pub fn invalid_env(var: &str, details: impl Into<String>) -> Self {
        Self::new(
            codes::INVALID_ENV,
            format!("invalid environment variable {var}"),
            details,
        )
    }

    /// Code 4: required environment variables are missing (all of them named).
    pub fn missing_env(vars: &[&str]) -> Self {
        Self::new(
            codes::INVALID_ENV,
            format!("required env variables [{}] missing", vars.join(",")),
            "",
        )
    }

    /// Code 5: an I/O operation failed.
    pub fn io(what: impl Into<String>, err: &std::io::Error) -> Self {
        Self::new(
            codes::IO_FAILURE,
            "I/O failure",
            format!("{}: {err}", what.into()),
        )
    }

    /// Code 6: stdin could not be decoded.
    pub fn decode(details: impl Into<String>) -> Self {
        Self::new(
            codes::DECODE_FAILURE,
            "failed to decode network config",
            details,
        )
    }

    /// Code 7: the network config is invalid; `field` is its JSON path.
    pub fn invalid_config(field: &str, details: impl Into<String>) -> Self {
        Self::new(
            codes::INVALID_CONFIG,
            format!("invalid network config: {field}"),
            details,
        )
    }

    /// Code 11: a transient failure (store busy); the runtime should retry.
    pub fn try_again(details: impl Into<String>) -> Self {
        Self::new(codes::TRY_AGAIN, "try again later", details)
    }

    /// Code 50: STATUS says an ADD cannot be served now.
    pub fn status_unavailable(details: impl Into<String>) -> Self {
        Self::new(codes::STATUS_UNAVAILABLE, "plugin not available", details)
    }

    /// Code 51: STATUS says not available and existing containers may be degraded.
    pub fn status_degraded(details: impl Into<String>) -> Self {
        Self::new(
            codes::STATUS_DEGRADED,
            "plugin not available, existing containers may be degraded",
            details,
        )
    }

    /// Code 100: range set `index` has no free address.
    pub fn range_exhausted(index: usize, ranges: impl Into<String>) -> Self {
        Self::new(
            codes::RANGE_EXHAUSTED,
            format!("no free address in range set {index}"),
            ranges,
        )
    }

    /// Code 101: a statically requested address is held by another attachment.
    pub fn address_unavailable(addr: std::net::IpAddr, details: impl Into<String>) -> Self {
        Self::new(
            codes::ADDRESS_UNAVAILABLE,
            format!("requested address {addr} is not available"),
            details,
        )
    }

    /// Code 102: the store failed its integrity check.
    pub fn store_corrupt(details: impl Into<String>) -> Self {
        Self::new(codes::STORE_CORRUPT, "store is corrupt", details)
    }

    /// Code 103: a static request that no range set can serve.
    pub fn address_not_in_range(addr: std::net::IpAddr, details: impl Into<String>) -> Self {
        Self::new(
            codes::ADDRESS_NOT_IN_RANGE,
            format!("requested address {addr} cannot be served by this network"),
            details,
        )
    }

    /// Code 104: CHECK found no reservation, or a different one.
    pub fn reservation_mismatch(details: impl Into<String>) -> Self {
        Self::new(
            codes::RESERVATION_MISMATCH,
            "reservation does not match prevResult",
            details,
        )
    }

    /// Code 105: daemon mode cannot be served.
    pub fn daemon_unavailable(details: impl Into<String>) -> Self {
        Self::new(
            codes::DAEMON_UNAVAILABLE,
            "daemon mode not available",
            details,
        )
    }

    /// Code 106: GC released what it could; `failures` lists the rest.
    pub fn gc_incomplete(failures: &[String]) -> Self {
        Self::new(
            codes::GC_INCOMPLETE,
            format!("GC failed to release {} attachment(s)", failures.len()),
            failures.join("; "),
        )
    }

    /// Code 107: the store was written by a newer kipam.
    pub fn store_too_new(details: impl Into<String>) -> Self {
        Self::new(
            codes::STORE_TOO_NEW,
            "store schema is newer than this plugin",
            details,
        )
    }

    /// The spec's error JSON, with `cniVersion` echoed when the input named one.
    pub fn to_json(&self, cni_version: Option<&str>) -> String {
        let wire = Wire {
            cni_version,
            code: self.code,
            msg: &self.msg,
            details: &self.details,
        };
        // Serialising a struct of strings and an integer cannot fail; the fallback keeps
        // the contract (JSON on stdout) even if it somehow did.
        serde_json::to_string(&wire)
            .unwrap_or_else(|_| format!(r#"{{"code":{},"msg":"internal error"}}"#, self.code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_spec_fields_in_order() {
        let e = CniError::invalid_config("ipam.ranges[0][0].subnet", "not a CIDR: \"x\"");
        assert_eq!(
            e.to_json(Some("1.0.0")),
            r#"{"cniVersion":"1.0.0","code":7,"msg":"invalid network config: ipam.ranges[0][0].subnet","details":"not a CIDR: \"x\""}"#
        );
    }

    #[test]
    fn json_omits_unknown_version_and_empty_details() {
        let e = CniError::missing_env(&["CNI_COMMAND", "CNI_IFNAME"]);
        let v: serde_json::Value = serde_json::from_str(&e.to_json(None)).expect("valid JSON");
        assert_eq!(v["code"], 4);
        assert!(v.get("cniVersion").is_none());
        assert!(v.get("details").is_none());
        assert!(v["msg"].as_str().is_some_and(|m| m.contains("CNI_IFNAME")));
    }

    #[test]
    fn constructors_use_their_codes() {
        let ip: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
        let cases = [
            (CniError::incompatible_version("x", ""), 1),
            (CniError::unsupported_field("k", "v"), 2),
            (CniError::unknown_container(""), 3),
            (CniError::invalid_env("CNI_ARGS", ""), 4),
            (CniError::io("read", &std::io::Error::other("boom")), 5),
            (CniError::decode(""), 6),
            (CniError::invalid_config("name", ""), 7),
            (CniError::try_again(""), 11),
            (CniError::status_unavailable(""), 50),
            (CniError::status_degraded(""), 51),
            (CniError::range_exhausted(0, ""), 100),
            (CniError::address_unavailable(ip, ""), 101),
            (CniError::store_corrupt(""), 102),
            (CniError::address_not_in_range(ip, ""), 103),
            (CniError::reservation_mismatch(""), 104),
            (CniError::daemon_unavailable(""), 105),
            (CniError::gc_incomplete(&[]), 106),
            (CniError::store_too_new(""), 107),
        ];
        for (e, code) in cases {
            assert_eq!(e.code, code, "{e}");
        }
        assert!(
            CniError::unsupported_field("ipam.foo", "bar")
                .msg
                .contains("ipam.foo=bar")
        );
    }
}
