//! CNI spec versions: which ones kipam speaks, how they order, and the VERSION verb.
//!
//! The result shape and the verbs allowed depend on the config's `cniVersion`, so the
//! version is parsed once into an ordered enum and everything else compares against it.
//! The gates mirror the Go skel (`pkg/skel/skel.go`): CHECK needs ≥ 0.4.0, GC and STATUS
//! need ≥ 1.1.0, each refused with code 1 otherwise.

use serde::Serialize;

use crate::error::CniError;

/// A spec version kipam supports, in release order (so `<` means "older").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecVersion {
    /// 0.3.0
    V0_3_0,
    /// 0.3.1
    V0_3_1,
    /// 0.4.0: adds CHECK.
    V0_4_0,
    /// 1.0.0: drops `ips[].version`.
    V1_0_0,
    /// 1.1.0: adds GC and STATUS, route attributes `mtu`/`advmss`/`priority`/`table`/`scope`.
    V1_1_0,
}

/// Every supported version, oldest first, as VERSION lists them.
pub const SUPPORTED: [SpecVersion; 5] = [
    SpecVersion::V0_3_0,
    SpecVersion::V0_3_1,
    SpecVersion::V0_4_0,
    SpecVersion::V1_0_0,
    SpecVersion::V1_1_0,
];

impl SpecVersion {
    /// The newest supported version.
    pub const LATEST: SpecVersion = SpecVersion::V1_1_0;

    /// The version as written in configs.
    pub fn as_str(self) -> &'static str {
        match self {
            SpecVersion::V0_3_0 => "0.3.0",
            SpecVersion::V0_3_1 => "0.3.1",
            SpecVersion::V0_4_0 => "0.4.0",
            SpecVersion::V1_0_0 => "1.0.0",
            SpecVersion::V1_1_0 => "1.1.0",
        }
    }

    /// Parses an exact version string; like the Go reconciler, only listed strings match.
    pub fn parse(s: &str) -> Option<SpecVersion> {
        SUPPORTED.into_iter().find(|v| v.as_str() == s)
    }

    /// Parses a config's `cniVersion`, answering code 1 if kipam does not support it.
    /// An absent version means 0.1.0, as in the Go decoder, and is refused too.
    pub fn from_config(s: Option<&str>) -> Result<SpecVersion, CniError> {
        let s = s.unwrap_or("0.1.0");
        Self::parse(s).ok_or_else(|| {
            CniError::incompatible_version(
                "incompatible CNI versions",
                format!("config is {s:?}, plugin supports {:?}", supported_strings()),
            )
        })
    }

    /// Whether results of this version carry `ips[].version`.
    pub fn has_ip_version(self) -> bool {
        self < SpecVersion::V1_0_0
    }
}

/// The supported versions as strings, oldest first.
pub fn supported_strings() -> Vec<&'static str> {
    SUPPORTED.iter().map(|v| v.as_str()).collect()
}

/// The verbs whose availability depends on the config version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatedVerb {
    /// CHECK, from 0.4.0.
    Check,
    /// GC, from 1.1.0.
    Gc,
    /// STATUS, from 1.1.0.
    Status,
}

/// Refuses a verb the config's version does not have, with code 1 as the Go skel does.
pub fn allow(verb: GatedVerb, v: SpecVersion) -> Result<(), CniError> {
    let (min, name) = match verb {
        GatedVerb::Check => (SpecVersion::V0_4_0, "CHECK"),
        GatedVerb::Gc => (SpecVersion::V1_1_0, "GC"),
        GatedVerb::Status => (SpecVersion::V1_1_0, "STATUS"),
    };
    if v < min {
        return Err(CniError::incompatible_version(
            format!("config version does not allow {name}"),
            format!(
                "config is {:?}, {name} needs {:?} or newer",
                v.as_str(),
                min.as_str()
            ),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct VersionResult<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    #[serde(rename = "supportedVersions")]
    supported_versions: Vec<&'static str>,
}

/// The VERSION answer. Since 1.1 the runtime sends `{"cniVersion": …}` and expects it
/// echoed; older runtimes send nothing, or something kipam cannot read, and then get
/// the newest version kipam speaks.
pub fn version_output(stdin: &[u8]) -> String {
    let echoed = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| {
            v.get("cniVersion")
                .and_then(|s| s.as_str())
                .and_then(SpecVersion::parse)
        })
        .unwrap_or(SpecVersion::LATEST);
    let out = VersionResult {
        cni_version: echoed.as_str(),
        supported_versions: supported_strings(),
    };
    serde_json::to_string(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_round_trip() {
        for w in SUPPORTED.windows(2) {
            assert!(w[0] < w[1]);
        }
        for v in SUPPORTED {
            assert_eq!(SpecVersion::parse(v.as_str()), Some(v));
        }
        for bad in ["", "0.2.0", "1.0", "1.1.0 ", "2.0.0", "0.1.0"] {
            assert_eq!(SpecVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn absent_or_unknown_version_is_code_1() {
        assert_eq!(SpecVersion::from_config(None).map_err(|e| e.code), Err(1));
        let e = SpecVersion::from_config(Some("9.9.9")).expect_err("unsupported");
        assert_eq!(e.code, 1);
        assert!(e.details.contains("9.9.9") && e.details.contains("1.1.0"));
    }

    #[test]
    fn gates_per_version() {
        for v in SUPPORTED {
            assert_eq!(
                allow(GatedVerb::Check, v).is_ok(),
                v >= SpecVersion::V0_4_0,
                "{v:?}"
            );
            assert_eq!(
                allow(GatedVerb::Gc, v).is_ok(),
                v == SpecVersion::V1_1_0,
                "{v:?}"
            );
            assert_eq!(
                allow(GatedVerb::Status, v).is_ok(),
                v == SpecVersion::V1_1_0,
                "{v:?}"
            );
        }
        let e = allow(GatedVerb::Check, SpecVersion::V0_3_1).expect_err("refused");
        assert_eq!(
            (e.code, e.msg.as_str()),
            (1, "config version does not allow CHECK")
        );
    }

    #[test]
    fn ip_version_field_only_before_1_0() {
        for v in SUPPORTED {
            assert_eq!(v.has_ip_version(), v.as_str().starts_with("0."));
        }
    }

    #[test]
    fn version_echoes_input_when_supported() {
        for v in SUPPORTED {
            let out: serde_json::Value = serde_json::from_str(&version_output(
                format!(r#"{{"cniVersion":"{}"}}"#, v.as_str()).as_bytes(),
            ))
            .expect("json");
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["supportedVersions"].as_array().map(Vec::len), Some(5));
        }
        for input in [&b""[..], b"{", b"{\"cniVersion\":\"0.1.0\"}", b"[1]"] {
            let out: serde_json::Value =
                serde_json::from_str(&version_output(input)).expect("json");
            assert_eq!(out["cniVersion"], "1.1.0");
        }
    }
}
