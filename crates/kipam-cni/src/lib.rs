//! The `kipam` CNI IPAM plugin: a faster, dual-stack, drop-in replacement for host-local.
//!
//! # Layout
//! - [`env`]: the `CNI_*` variables and `CNI_ARGS`.
//! - [`config`]: the network config on stdin, host-local compatible, fully validated.
//! - [`version`]: spec versions, the VERSION verb and the per-verb version gates.
//! - [`result`]: the ADD result per spec version, and `resolvConf` parsing.
//! - [`error`]: [`CniError`] and its wire form; the plugin's error-code table.
//! - [`backend`]: the [`Backend`] trait that holds the addresses.
//! - [`trace`]: `KIPAM_TRACE=1` phase timings of one exec on stderr.
//!
//! [`run`] is the whole plugin as a function of (environment, stdin) to (stdout, exit
//! code); `main.rs` only gathers the process's environment and stdin. The backend comes
//! from a factory handed the parsed `ipam` config, so [`run`] can be tested against an
//! real standalone backend over a temporary store while the binary wires the production
//! factory [`open_backend`].
//! Logs go to stderr only: stdout carries exactly one result or error JSON.

pub mod backend;
pub mod config;
pub mod daemon;
pub mod env;
pub mod error;
pub mod result;
pub mod standalone;
pub mod trace;
pub mod version;

use std::collections::HashMap;
use std::io::{Read, Write};

pub use backend::{AddRequest, Assigned, Attachment, Backend, PodAttrs, Range};
pub use config::{IpamConfig, Mode};
pub use error::CniError;

use crate::env::Command;
use crate::version::{GatedVerb, allow};

/// Builds the backend for one invocation from the validated `ipam` config.
pub type BackendFactory<'a> = dyn Fn(&IpamConfig) -> Result<Box<dyn Backend>, CniError> + 'a;

/// The production factory: standalone mode opens the store under `dataDir`; daemon mode
/// (`ipam.daemonSocket`) talks to kipamd over its unix socket.
pub fn open_backend(cfg: &IpamConfig) -> Result<Box<dyn Backend>, CniError> {
    match &cfg.mode {
        Mode::Daemon { socket, pools } => daemon::open(socket, pools),
        Mode::Standalone => standalone::open(cfg),
    }
}

/// Reads stdin up to one byte past [`config::MAX_STDIN`], so an oversized config is
/// detected without reading all of it.
pub fn read_stdin(r: &mut dyn Read) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(config::MAX_STDIN as u64 + 1).read_to_end(&mut buf)?;
    Ok(buf)
}

/// The process entry: reads stdin (not for VERSION on a terminal, where nobody would
/// send anything), then [`run`]s.
pub fn run_process(
    vars: &HashMap<String, String>,
    stdin: &mut dyn Read,
    stdin_is_terminal: bool,
    stdout: &mut dyn Write,
    factory: &BackendFactory<'_>,
) -> i32 {
    let skip = stdin_is_terminal
        && vars
            .get("CNI_COMMAND")
            .is_none_or(|c| c == "VERSION" || c.is_empty());
    let input = if skip {
        Ok(Vec::new())
    } else {
        read_stdin(stdin)
    };
    match input {
        Ok(bytes) => run(vars, &bytes, stdout, factory),
        Err(e) => emit_error(stdout, &CniError::io("reading stdin", &e), None),
    }
}

/// Runs one CNI invocation: dispatches on `CNI_COMMAND`, writes the result or the error
/// JSON to `stdout`, and returns the exit code (0 on success, 1 on error).
pub fn run(
    vars: &HashMap<String, String>,
    stdin: &[u8],
    stdout: &mut dyn Write,
    factory: &BackendFactory<'_>,
) -> i32 {
    if vars.get("CNI_COMMAND").is_none_or(String::is_empty) {
        // As the Go skel does for a human at a shell: say what this is, not an error.
        eprintln!(
            "CNI plugin kipam v{}\nCNI protocol versions supported: {}",
            env!("CARGO_PKG_VERSION"),
            version::supported_strings().join(", ")
        );
        return 0;
    }
    // Echo the config's version in errors whenever stdin names one, even an unsupported
    // one, so the runtime can read the error in its own terms.
    let echo: Option<String> = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_owned));
    match dispatch(vars, stdin, factory) {
        Ok(out) => {
            if let Some(out) = out
                && let Err(e) = writeln!(stdout, "{out}")
            {
                eprintln!("kipam: writing the result to stdout: {e}");
                return 1;
            }
            0
        }
        Err(e) => emit_error(stdout, &e, echo.as_deref()),
    }
}

fn emit_error(stdout: &mut dyn Write, e: &CniError, cni_version: Option<&str>) -> i32 {
    eprintln!("kipam: error {}: {e}", e.code);
    if let Err(w) = writeln!(stdout, "{}", e.to_json(cni_version)) {
        eprintln!("kipam: writing the error to stdout: {w}");
    }
    1
}

fn dispatch(
    vars: &HashMap<String, String>,
    stdin: &[u8],
    factory: &BackendFactory<'_>,
) -> Result<Option<String>, CniError> {
    let env = env::parse(vars)?;
    if env.command == Command::Version {
        return Ok(Some(version::version_output(stdin)));
    }
    let obj = config::decode(stdin)?;
    let ver = config::preflight(&obj)?;
    match env.command {
        Command::Check => allow(GatedVerb::Check, ver)?,
        Command::Gc => allow(GatedVerb::Gc, ver)?,
        Command::Status => allow(GatedVerb::Status, ver)?,
        _ => {}
    }
    let conf = config::parse_object(&obj, &env.args.ips)?;
    let attachment = Attachment {
        network: conf.ipam.network.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
    };
    match env.command {
        Command::Add => {
            // Everything that can fail without the store fails before it is touched, so a
            // refused ADD never allocates.
            // In daemon mode without ranges kipamd's pools decide where an address fits.
            if !(matches!(conf.ipam.mode, Mode::Daemon { .. }) && conf.ipam.range_sets.is_empty()) {
                backend::assign_static(&conf.ipam.range_sets, &conf.static_ips)?;
            }
            let dns = conf
                .ipam
                .resolv_conf
                .as_deref()
                .map(result::read_resolv_conf)
                .transpose()?;
            let backend = factory(&conf.ipam)?;
            let req = AddRequest {
                attachment,
                range_sets: conf.ipam.range_sets.clone(),
                static_ips: conf.static_ips.clone(),
                attrs: PodAttrs {
                    namespace: env.args.pod_namespace,
                    name: env.args.pod_name,
                    uid: env.args.pod_uid,
                    infra_container_id: env.args.infra_container_id,
                },
                reuse_delay: conf.ipam.reuse_delay,
                data_dir: conf.ipam.data_dir.clone(),
            };
            let assigned = backend.add(&req)?;
            // One address per range set (standalone) or per listed pool (daemon); a
            // daemon without `pools` asks for one per family kipamd has pod pools of.
            let expected = match &conf.ipam.mode {
                Mode::Standalone => Some(req.range_sets.len()),
                Mode::Daemon { pools, .. } if !pools.is_empty() => Some(pools.len()),
                Mode::Daemon { .. } => None,
            };
            if expected.is_some_and(|n| n != assigned.len()) || assigned.is_empty() {
                let undo = backend.del(&req.attachment);
                return Err(CniError::store_corrupt(format!(
                    "backend returned {} addresses for {} wanted (rollback: {})",
                    assigned.len(),
                    expected.unwrap_or(1),
                    undo.map_or_else(|e| e.to_string(), |()| "done".into())
                )));
            }
            Ok(Some(result::render_add(
                conf.cni_version,
                &assigned,
                &conf.ipam.routes,
                dns.as_ref(),
            )))
        }
        Command::Del => {
            factory(&conf.ipam)?.del(&attachment)?;
            Ok(None)
        }
        Command::Check => {
            let expected = conf.prev_result_ips()?;
            factory(&conf.ipam)?.check(&attachment, &expected)?;
            Ok(None)
        }
        Command::Gc => {
            let valid = conf.valid_attachments()?;
            factory(&conf.ipam)?.gc(&conf.ipam.network, &valid)?;
            Ok(None)
        }
        Command::Status => {
            factory(&conf.ipam)
                .map_err(|e| CniError::status_unavailable(e.to_string()))?
                .status(&conf.ipam.network, &conf.ipam.range_sets)?;
            Ok(None)
        }
        Command::Version => Ok(Some(version::version_output(stdin))),
    }
}

#[cfg(test)]
mod testbackend;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testbackend::TestBackend;
    use crate::version::{SUPPORTED, SpecVersion};
    use serde_json::{Value, json};

    struct Call {
        code: i32,
        out: Value,
    }

    fn call(
        backend: &TestBackend,
        cmd: &str,
        id: &str,
        extra_env: &[(&str, &str)],
        stdin: &Value,
    ) -> Call {
        let mut vars: HashMap<String, String> = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/var/run/netns/test"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", "/usr/lib/cni"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra_env {
            vars.insert(k.to_string(), v.to_string());
        }
        let mut out = Vec::new();
        let factory =
            |cfg: &IpamConfig| -> Result<Box<dyn Backend>, CniError> { backend.for_config(cfg) };
        let code = run(&vars, stdin.to_string().as_bytes(), &mut out, &factory);
        let text = String::from_utf8_lossy(&out).to_string();
        let out = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Call { code, out }
    }

    fn config(v: SpecVersion) -> Value {
        json!({
            "cniVersion": v.as_str(), "name": "testnet", "type": "bridge", "bridge": "cni0",
            "ipam": {"type": "kipam",
                "ranges": [[{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.10", "rangeEnd": "10.99.0.12"}],
                           [{"subnet": "fd00:10:99::/64"}]],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}],
                "dataDir": "/nonexistent/kipam-test"}
        })
    }

    #[test]
    fn add_check_del_every_version() {
        for v in SUPPORTED {
            let store = TestBackend::default();
            let add = call(
                &store,
                "ADD",
                "c1",
                &[(
                    "CNI_ARGS",
                    "IgnoreUnknown=1;K8S_POD_NAME=p;K8S_POD_NAMESPACE=ns",
                )],
                &config(v),
            );
            assert_eq!(add.code, 0, "{v:?}: {}", add.out);
            assert_eq!(add.out["cniVersion"], v.as_str());
            assert_eq!(add.out["ips"][0]["address"], "10.99.0.10/24");
            assert_eq!(add.out["ips"][0]["gateway"], "10.99.0.1");
            assert_eq!(add.out["ips"][1]["address"], "fd00:10:99::2/64");
            assert_eq!(
                add.out["ips"][0].get("version").is_some(),
                v < SpecVersion::V1_0_0
            );
            assert_eq!(add.out["routes"][0]["gw"], "10.99.0.1");
            assert_eq!(store.attrs("c1").and_then(|a| a.name), Some("p".into()));
            assert_eq!(
                store.data_dir().as_deref(),
                Some(std::path::Path::new("/nonexistent/kipam-test"))
            );

            // A repeated ADD returns what the attachment holds.
            let again = call(&store, "ADD", "c1", &[], &config(v));
            assert_eq!(again.out["ips"], add.out["ips"]);

            let mut with_prev = config(v);
            with_prev["prevResult"] = add.out.clone();
            let check = call(&store, "CHECK", "c1", &[], &with_prev);
            if v >= SpecVersion::V0_4_0 {
                assert_eq!((check.code, &check.out), (0, &Value::Null), "{v:?}");
            } else {
                assert_eq!(check.code, 1);
                assert_eq!(check.out["code"], 1);
                assert_eq!(check.out["msg"], "config version does not allow CHECK");
            }
            for _ in 0..2 {
                let del = call(&store, "DEL", "c1", &[("CNI_NETNS", "")], &with_prev);
                assert_eq!((del.code, &del.out), (0, &Value::Null));
            }
            assert_eq!(store.held(), 0);
            if v >= SpecVersion::V0_4_0 {
                let check = call(&store, "CHECK", "c1", &[], &with_prev);
                assert_eq!(check.out["code"], 104, "{v:?}");
            }
        }
    }

    #[test]
    fn exhaustion_fails_whole_add() {
        let store = TestBackend::default();
        let c = config(SpecVersion::V1_0_0);
        for id in ["a", "b", "c"] {
            assert_eq!(call(&store, "ADD", id, &[], &c).code, 0);
        }
        let held = store.held();
        let d = call(&store, "ADD", "d", &[], &c);
        assert_eq!(d.code, 1);
        assert_eq!(d.out["code"], 100);
        assert_eq!(d.out["cniVersion"], "1.0.0");
        assert_eq!(store.held(), held, "nothing allocated by the failed ADD");
    }

    #[test]
    fn static_requests_reach_the_backend() {
        let store = TestBackend::default();
        let mut c = config(SpecVersion::V1_1_0);
        c["runtimeConfig"] = json!({"ips": ["fd00:10:99::42/64"]});
        let add = call(&store, "ADD", "s", &[("CNI_ARGS", "IP=10.99.0.11")], &c);
        assert_eq!(add.code, 0, "{}", add.out);
        assert_eq!(add.out["ips"][0]["address"], "10.99.0.11/24");
        assert_eq!(add.out["ips"][1]["address"], "fd00:10:99::42/64");
        let taken = call(
            &store,
            "ADD",
            "t",
            &[("CNI_ARGS", "IP=10.99.0.11")],
            &config(SpecVersion::V1_1_0),
        );
        assert_eq!(taken.out["code"], 101);
        let outside = call(
            &store,
            "ADD",
            "u",
            &[("CNI_ARGS", "IP=10.99.0.200")],
            &config(SpecVersion::V1_1_0),
        );
        assert_eq!(outside.out["code"], 103);
        assert!(!store.holds("u"));
    }

    #[test]
    fn gc_and_status() {
        let store = TestBackend::default();
        let c = config(SpecVersion::V1_1_0);
        for id in ["a", "b", "c"] {
            assert_eq!(call(&store, "ADD", id, &[], &c).code, 0);
        }
        let status = call(&store, "STATUS", "", &[], &c);
        assert_eq!(status.code, 1);
        assert_eq!(status.out["code"], 50, "range of 3 is full: {}", status.out);
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "b", "ifname": "eth0"}]);
        let out = call(&store, "GC", "", &[], &gc);
        assert_eq!((out.code, &out.out), (0, &Value::Null));
        assert!(store.holds("b") && !store.holds("a") && !store.holds("c"));
        let status = call(&store, "STATUS", "", &[], &c);
        assert_eq!((status.code, &status.out), (0, &Value::Null));
        // GC without any list is refused rather than releasing everything.
        assert_eq!(call(&store, "GC", "", &[], &c).out["code"], 7);
        for v in [SpecVersion::V0_4_0, SpecVersion::V1_0_0] {
            let mut old = gc.clone();
            old["cniVersion"] = json!(v.as_str());
            assert_eq!(
                call(&store, "GC", "", &[], &old).out["msg"],
                "config version does not allow GC"
            );
            assert_eq!(call(&store, "STATUS", "", &[], &old).out["code"], 1);
        }
        assert!(store.holds("b"));
    }

    #[test]
    fn errors_are_json_with_version_echoed() {
        let store = TestBackend::default();
        let mut bad = config(SpecVersion::V0_4_0);
        bad["ipam"]["ranges"][0][0]["subnet"] = json!("10.99.0.0/99");
        let out = call(&store, "ADD", "x", &[], &bad);
        assert_eq!(out.code, 1);
        assert_eq!(out.out["cniVersion"], "0.4.0");
        assert_eq!(out.out["code"], 7);
        assert!(
            out.out["msg"]
                .as_str()
                .is_some_and(|m| m.contains("ipam.ranges[0][0].subnet"))
        );

        let mut newer = config(SpecVersion::V1_0_0);
        newer["cniVersion"] = json!("9.0.0");
        let out = call(&store, "ADD", "x", &[], &newer);
        assert_eq!(
            (out.out["code"].as_u64(), out.out["cniVersion"].as_str()),
            (Some(1), Some("9.0.0"))
        );

        let out = call(&store, "ADD", "bad id", &[], &config(SpecVersion::V1_0_0));
        assert_eq!(out.out["code"], 4);
        assert!(
            out.out["msg"]
                .as_str()
                .is_some_and(|m| m.contains("CNI_CONTAINERID"))
        );
        let out = call(
            &store,
            "ADD",
            "x",
            &[("CNI_ARGS", "FOO=bar")],
            &config(SpecVersion::V1_0_0),
        );
        assert_eq!(out.out["code"], 4);

        let mut vars = HashMap::new();
        vars.insert("CNI_COMMAND".to_string(), "ADD".to_string());
        vars.insert("CNI_CONTAINERID".to_string(), "x".to_string());
        vars.insert("CNI_NETNS".to_string(), "/n".to_string());
        vars.insert("CNI_IFNAME".to_string(), "eth0".to_string());
        let mut out = Vec::new();
        let factory = |cfg: &IpamConfig| store.for_config(cfg);
        assert_eq!(run(&vars, b"{not json", &mut out, &factory), 1);
        let v: Value = serde_json::from_slice(&out).expect("error JSON");
        assert_eq!(v["code"], 6);
        assert_eq!(
            store.data_dir(),
            None,
            "no backend is opened for a refused request"
        );
    }

    #[test]
    fn version_verb_and_bare_invocation() {
        let store = TestBackend::default();
        let out = call(&store, "VERSION", "", &[], &json!({"cniVersion": "1.0.0"}));
        assert_eq!(out.out["cniVersion"], "1.0.0");
        assert_eq!(
            out.out["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        let mut stdout = Vec::new();
        let factory = |cfg: &IpamConfig| store.for_config(cfg);
        assert_eq!(run(&HashMap::new(), b"", &mut stdout, &factory), 0);
        assert!(stdout.is_empty());
        let mut stdin: &[u8] = b"";
        let vars: HashMap<String, String> =
            [("CNI_COMMAND".to_string(), "VERSION".to_string())].into();
        assert_eq!(
            run_process(&vars, &mut stdin, true, &mut stdout, &factory),
            0
        );
        assert!(String::from_utf8_lossy(&stdout).contains("1.1.0"));
    }

    #[test]
    fn huge_stdin_is_refused_cleanly() {
        let store = TestBackend::default();
        let vars: HashMap<String, String> = [
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "x"),
            ("CNI_NETNS", "/n"),
            ("CNI_IFNAME", "eth0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let big = vec![b'x'; 3 << 20];
        let mut stdin: &[u8] = &big;
        let mut out = Vec::new();
        let factory = |cfg: &IpamConfig| store.for_config(cfg);
        assert_eq!(run_process(&vars, &mut stdin, false, &mut out, &factory), 1);
        let v: Value = serde_json::from_slice(&out).expect("error JSON");
        assert_eq!(v["code"], 6);
    }

    #[test]
    fn production_factory_modes() {
        let mut conf = config::parse(&config(SpecVersion::V1_1_0).to_string().into_bytes(), &[])
            .expect("valid");
        let dir = std::env::temp_dir().join(format!("kipam-factory-{}", std::process::id()));
        conf.ipam.data_dir = dir.join("state");
        assert!(
            open_backend(&conf.ipam).is_ok(),
            "standalone opens its store"
        );
        assert!(dir.join("state").join("kipam.db").exists());
        let _ = std::fs::remove_dir_all(&dir);
        let mut d = config(SpecVersion::V1_1_0);
        d["ipam"]["daemonSocket"] = json!(dir.join("no-kipamd.sock"));
        d["ipam"]["pools"] = json!(["pods-v4"]);
        let conf = config::parse(&d.to_string().into_bytes(), &[]).expect("valid");
        let backend = open_backend(&conf.ipam).expect("daemon mode connects lazily");
        let att = Attachment {
            network: "testnet".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        };
        let e = backend.del(&att).expect_err("no kipamd listens there");
        assert_eq!(
            e.code, 11,
            "kipamd unreachable means try again later: {e:?}"
        );
        assert!(
            e.msg.contains("kipamd") || e.details.contains("kipamd"),
            "{e:?}"
        );
    }
}
