//! Parsers of command-line values (clap `value_parser`s) and of input files.
//!
//! Each parser's error says what was expected with an example, because it is printed as
//! is under "invalid value ... for ...". Files are JSON or YAML, chosen by extension
//! (`.json`, `.yaml`, `.yml`) and otherwise by content (JSON starts with `{` or `[`), so
//! the same plan file works offline, with `--remote` and through the API. External
//! network imports also take CSV.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use kipam_core::{AddrRange, Millis, ScopeNetwork};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::error::CliError;

/// A CIDR with zero host bits: `10.244.0.0/16`, `fd00::/64`.
pub fn cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s.trim().parse().map_err(|_| {
        format!("{s:?} is not a CIDR; expected ADDRESS/LENGTH like 10.244.0.0/16 or fd00::/64")
    })?;
    if net.trunc() != net {
        return Err(format!(
            "{s} has host bits set; did you mean {}?",
            net.trunc()
        ));
    }
    Ok(net)
}

/// An IP address: `10.244.0.5`, `fd00::5`.
pub fn ip(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address; expected e.g. 10.244.0.5 or fd00::5"))
}

/// An address range: `FIRST-LAST`, a CIDR, or one address.
pub fn range(s: &str) -> Result<AddrRange, String> {
    let s = s.trim();
    if let Some((a, b)) = s.split_once('-') {
        let (a, b) = (ip(a)?, ip(b)?);
        return AddrRange::new(a, b).ok_or_else(|| {
            format!("{a}-{b} is not a range: both ends must be one family and {a} ≤ {b}")
        });
    }
    if s.contains('/') {
        return Ok(AddrRange::of_net(cidr(s)?));
    }
    let a = ip(s).map_err(|_| {
        format!(
            "{s:?} is not a range; expected FIRST-LAST (10.0.0.5-10.0.0.9), a CIDR or an address"
        )
    })?;
    AddrRange::new(a, a).ok_or_else(|| format!("{s} is not a range"))
}

/// A `KEY=VALUE` pair.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A time: RFC 3339 (`2025-05-01T12:00:00Z`), or a duration ago (`90m`, `2h`, `3d`).
pub fn time(s: &str) -> Result<TimeArg, String> {
    if let Ok(t) = kipam_api::time::parse(s) {
        return Ok(TimeArg::At(t));
    }
    kipam_api::planning::parse_duration(s)
        .map(TimeArg::Ago)
        .map_err(|_| {
            format!("{s:?} is not a time; expected RFC 3339 (2025-05-01T12:00:00Z) or a duration ago (90m, 2h, 3d)")
        })
}

/// A point in time given on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeArg {
    /// An absolute time.
    At(Millis),
    /// That long before now.
    Ago(Millis),
}

impl TimeArg {
    /// The time, relative to `now`.
    pub fn resolve(self, now: Millis) -> Millis {
        match self {
            TimeArg::At(t) => t,
            TimeArg::Ago(d) => now.saturating_sub(d),
        }
    }
}

/// A duration: `30s`, `90m`, `12h`, `7d` (checked here so a typo is a usage error
/// before anything is sent).
pub fn duration(s: &str) -> Result<String, String> {
    kipam_api::planning::parse_duration(s)
        .map(|_| s.trim().to_string())
        .map_err(|e| e.to_string())
}

/// Milliseconds since the Unix epoch, from the system clock.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The format of an input file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// JSON.
    Json,
    /// YAML.
    Yaml,
    /// CSV (external network imports only).
    Csv,
}

/// The format of `path` by extension, else by content.
pub fn format_of(path: &Path, text: &str) -> FileFormat {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("json") => FileFormat::Json,
        Some("yaml" | "yml") => FileFormat::Yaml,
        Some("csv") => FileFormat::Csv,
        _ if text.trim_start().starts_with(['{', '[']) => FileFormat::Json,
        _ => FileFormat::Yaml,
    }
}

/// Reads a file (`-` is stdin).
pub fn read_text(path: &Path) -> Result<String, CliError> {
    let r = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    };
    r.map_err(|source| CliError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Decodes `text` of `path` as JSON or YAML into `T` (unknown fields are refused where
/// `T` refuses them; the error names the line).
pub fn decode<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, CliError> {
    let bad = |detail: String| CliError::BadFile {
        path: path.to_path_buf(),
        detail,
    };
    match format_of(path, text) {
        FileFormat::Json => serde_json::from_str(text).map_err(|e| bad(e.to_string())),
        FileFormat::Yaml => serde_norway::from_str(text).map_err(|e| bad(e.to_string())),
        FileFormat::Csv => Err(bad(
            "CSV is only read by `external import`; use JSON or YAML".into(),
        )),
    }
}

/// Reads and decodes a JSON or YAML file.
pub fn read_file<T: DeserializeOwned>(path: &Path) -> Result<T, CliError> {
    let text = read_text(path)?;
    decode(path, &text)
}

/// External networks to import, from CSV (`name,cidr[,scope[,description]]`, an optional
/// header line, `#` comments) or JSON/YAML (a list, or `{"items": [...]}` as
/// `external list -o json` prints). Every entry is checked before anything is sent.
pub fn external_networks(path: &Path) -> Result<Vec<ScopeNetwork>, CliError> {
    let text = read_text(path)?;
    match format_of(path, &text) {
        FileFormat::Csv => csv_networks(path, &text),
        _ => {
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Doc {
                List(Vec<ScopeNetwork>),
                Items { items: Vec<ScopeNetwork> },
            }
            let nets = match decode::<Doc>(path, &text)? {
                Doc::List(l) | Doc::Items { items: l } => l,
            };
            for (i, n) in nets.iter().enumerate() {
                if n.cidr.trunc() != n.cidr {
                    return Err(CliError::BadFile {
                        path: path.to_path_buf(),
                        detail: format!(
                            "entry {} ({}): {} has host bits set; did you mean {}?",
                            i + 1,
                            n.name,
                            n.cidr,
                            n.cidr.trunc()
                        ),
                    });
                }
            }
            Ok(nets)
        }
    }
}

fn csv_networks(path: &Path, text: &str) -> Result<Vec<ScopeNetwork>, CliError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|f| f.trim().trim_matches('"'))
            .collect();
        if out.is_empty() && i == first_data_line(text) && fields.first() == Some(&"name") {
            continue;
        }
        let bad = |detail: String| CliError::BadFile {
            path: PathBuf::from(path),
            detail: format!("line {}: {detail}", i + 1),
        };
        if fields.len() < 2 || fields.len() > 4 {
            return Err(bad(format!(
                "expected name,cidr[,scope[,description]], found {} fields",
                fields.len()
            )));
        }
        if fields[0].is_empty() {
            return Err(bad("the name is empty".into()));
        }
        let net = cidr(fields[1]).map_err(bad)?;
        out.push(ScopeNetwork {
            name: fields[0].to_string(),
            cidr: net,
            scope: fields
                .get(2)
                .filter(|s| !s.is_empty())
                .map_or_else(|| "default".to_string(), |s| s.to_string()),
            description: fields.get(3).map(|s| s.to_string()).unwrap_or_default(),
        });
    }
    Ok(out)
}

fn first_data_line(text: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim();
            !l.is_empty() && !l.starts_with('#')
        })
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_with_helpful_errors() {
        assert_eq!(cidr("10.244.0.0/16").unwrap().to_string(), "10.244.0.0/16");
        assert!(
            cidr("10.244.1.0/16")
                .unwrap_err()
                .contains("did you mean 10.244.0.0/16")
        );
        assert!(cidr("10.0.0.300/24").unwrap_err().contains("is not a CIDR"));
        assert!(cidr("10.0.0.0/33").is_err());
        assert!(cidr("").is_err());
    }

    #[test]
    fn ranges_and_pairs() {
        let r = range("10.0.0.5-10.0.0.9").unwrap();
        assert_eq!(r.first.to_string(), "10.0.0.5");
        assert_eq!(range("10.0.0.0/30").unwrap().last.to_string(), "10.0.0.3");
        assert_eq!(
            range("fd00::1").unwrap().first,
            range("fd00::1").unwrap().last
        );
        assert!(range("10.0.0.9-10.0.0.5").is_err());
        assert!(range("10.0.0.1-fd00::1").is_err());
        assert!(range("x").is_err());
        assert_eq!(key_value("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert!(key_value("=x").is_err());
        assert!(key_value("x").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(time("1970-01-01T00:00:01Z").unwrap(), TimeArg::At(1000));
        assert_eq!(
            time("2h").unwrap().resolve(10_000_000),
            10_000_000 - 7_200_000
        );
        assert!(time("yesterday").is_err());
        assert!(duration("7d").is_ok() && duration("7x").is_err());
    }

    #[test]
    fn file_formats() {
        assert_eq!(format_of(Path::new("a.yml"), "{"), FileFormat::Yaml);
        assert_eq!(format_of(Path::new("a"), " {\"a\":1}"), FileFormat::Json);
        assert_eq!(format_of(Path::new("a"), "a: 1"), FileFormat::Yaml);
        assert_eq!(format_of(Path::new("x.CSV"), ""), FileFormat::Csv);
        let v: serde_json::Value = decode(Path::new("p.yaml"), "a: [1, 2]\n").unwrap();
        assert_eq!(v["a"][1], 2);
        let e = decode::<serde_json::Value>(Path::new("p.json"), "{").unwrap_err();
        assert!(e.to_string().starts_with("p.json: "), "{e}");
    }

    #[test]
    fn csv_imports() {
        let text = "# site list\nname,cidr,scope,description\nvpn,192.168.0.0/16,,office\nvpc, 172.16.0.0/12 ,prod\n\n";
        let nets = csv_networks(Path::new("n.csv"), text).unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].scope, "default");
        assert_eq!(nets[0].description, "office");
        assert_eq!(nets[1].scope, "prod");
        let e = csv_networks(Path::new("n.csv"), "a,10.0.0.1/8\n").unwrap_err();
        assert!(
            e.to_string().contains("line 1") && e.to_string().contains("host bits"),
            "{e}"
        );
        let e = csv_networks(Path::new("n.csv"), "a\n").unwrap_err();
        assert!(e.to_string().contains("found 1 fields"), "{e}");
    }
}
