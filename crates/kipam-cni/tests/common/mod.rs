//! Real-system test harness: throwaway network namespaces and the real CNI plugins,
//! driven the way a container runtime drives them.
//!
//! Each test gets a *sandbox* namespace that plays the host: the interface plugins
//! (`bridge`, `ptp`, `macvlan`) run inside it through `ip netns exec`, so bridges,
//! veths, sysctls (`ip_forward`, `bridge-nf-call-iptables`) and firewall state they touch
//! are the sandbox's, never the machine's (CNI-NOTES pitfalls 4 and 5). Container
//! namespaces are further `ip netns add` namespaces; everything is removed on drop,
//! also when a test fails. Bridges are pre-created with a fixed MAC (pitfall 2), routes
//! always carry `gw` (pitfall 3), `isGateway` stays false (pitfall 4). Test subnets are
//! checked against the machine's own routes (pitfall 6) and are unique per test, so
//! tests run in parallel.
//!
//! The IPAM plugin is a parameter ([`IpamKind`]): the same flows run with `kipam` and
//! with the reference `host-local`, which validates the harness itself.
//!
//! Needs: root, `ip` (iproute2), `ping` (iputils-ping), `/usr/lib/cni/*`
//! (containernetworking-plugins). Without them a test prints `SKIPPED: <name>: <why>`
//! and returns; with `KIPAM_REQUIRE_REAL=1` (CI) it fails instead.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde_json::{Value, json};

/// Where Debian installs the reference plugins.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

/// Spec versions Debian's bridge/ptp/macvlan/host-local (v1.1.1) support and kipam too.
pub const INTERFACE_PLUGIN_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// Every version kipam supports (direct, plugin-level tests).
pub const KIPAM_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A process-unique small number for names.
pub fn unique() -> usize {
    COUNTER.fetch_add(1, Ordering::SeqCst)
}

/// Which IPAM plugin a flow runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpamKind {
    /// The plugin under test, standalone (SQLite under `dataDir`).
    Kipam,
    /// The plugin under test in daemon mode: `daemonSocket` to a kipamd the runtime starts.
    KipamDaemon,
    /// The reference plugin, to validate the harness.
    HostLocal,
}

impl IpamKind {
    /// The `ipam.type` value.
    pub fn type_name(self) -> &'static str {
        match self {
            IpamKind::Kipam | IpamKind::KipamDaemon => "kipam",
            IpamKind::HostLocal => "host-local",
        }
    }

    /// The binary.
    pub fn binary(self) -> PathBuf {
        match self {
            IpamKind::Kipam | IpamKind::KipamDaemon => PathBuf::from(env!("CARGO_BIN_EXE_kipam")),
            IpamKind::HostLocal => Path::new(PLUGIN_DIR).join("host-local"),
        }
    }
}

fn skipped(test: &str, why: &str) -> bool {
    // CI sets this: there a skip would hide a broken setup, so it fails instead.
    if std::env::var_os("KIPAM_REQUIRE_REAL").is_some() {
        panic!("{test}: cannot run ({why}) and KIPAM_REQUIRE_REAL is set");
    }
    println!("SKIPPED: {test}: {why}");
    eprintln!("SKIPPED: {test}: {why}");
    // scripts/test counts the skips recorded here.
    if let Some(log) = std::env::var_os("KIPAM_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let _ = writeln!(f, "{test}: {why}");
        }
    }
    false
}

/// Whether the machine can run a real-system test; prints `SKIPPED` and returns false
/// when it cannot (not root, tools or plugins missing, kipam backend not wired yet).
pub fn require(test: &str, kind: IpamKind, plugins: &[&str]) -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if !root {
        return skipped(test, "needs root (network namespaces)");
    }
    for tool in ["ip", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            return skipped(
                test,
                &format!("`{tool}` not installed (iproute2, iputils-ping)"),
            );
        }
    }
    for p in plugins.iter().copied().chain([kind.type_name()]) {
        if p != "kipam" && !Path::new(PLUGIN_DIR).join(p).exists() {
            return skipped(
                test,
                &format!("{PLUGIN_DIR}/{p} missing (containernetworking-plugins)"),
            );
        }
    }
    let _ = kind;
    true
}

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `/tmp/kipam-test-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!(
            "kipam-test-{}-{}-{tag}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A throwaway network namespace, deleted on drop.
pub struct Netns {
    /// The name under /var/run/netns.
    pub name: String,
}

impl Netns {
    /// `ip netns add kipam-t-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> Netns {
        let name = format!("kipam-t-{}-{}-{tag}", std::process::id(), unique());
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        // Addresses are usable at once: no duplicate address detection to wait for.
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.accept_dad=0"]);
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.default.accept_dad=0"]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The path a runtime passes as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// Runs a command inside the namespace, panicking on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Whether a command inside the namespace succeeds.
    pub fn try_exec(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The global addresses on `dev`, as `ip/prefix`.
    pub fn addresses(&self, dev: &str) -> Vec<String> {
        self.exec(&["ip", "-o", "addr", "show", "dev", dev, "scope", "global"])
            .lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                it.find(|w| *w == "inet" || *w == "inet6")?;
                it.next().map(str::to_owned)
            })
            .collect()
    }

    /// Pings `ip` from this namespace (a few tries: links may take a moment).
    pub fn ping(&self, ip: IpAddr) -> bool {
        let ip = ip.to_string();
        (0..5).any(|_| self.try_exec(&["ping", "-c", "1", "-W", "1", &ip]))
    }

    /// Deletes the namespace now (as a runtime does before its final DEL).
    pub fn delete(self) {
        drop(self);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// One plugin execution's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Exit status was 0.
    pub success: bool,
    /// Killed by a signal (crash test).
    pub killed: bool,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl Outcome {
    /// Stdout as JSON (`Null` when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or(Value::Null)
    }

    /// Panics with everything known unless the call succeeded.
    pub fn expect_ok(&self, what: &str) -> Value {
        assert!(
            self.success,
            "{what} failed: stdout={} stderr={}",
            self.stdout, self.stderr
        );
        self.json()
    }
}

/// Runs a plugin (optionally inside namespace `host`) with `vars` and `conf` on stdin.
pub fn exec_plugin(
    host: Option<&Netns>,
    bin: &Path,
    vars: &[(&str, &str)],
    conf: &Value,
) -> Outcome {
    let child = spawn_plugin(host, bin, vars, conf);
    finish(child)
}

/// Starts a plugin; the caller may kill it (`Child::kill` is SIGKILL) before [`finish`].
pub fn spawn_plugin(
    host: Option<&Netns>,
    bin: &Path,
    vars: &[(&str, &str)],
    conf: &Value,
) -> std::process::Child {
    use std::io::Write;
    let mut cmd = match host {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
    if let Some(mut stdin) = child.stdin.take() {
        // A killed child closes the pipe early; that is not a test failure.
        let _ = stdin.write_all(conf.to_string().as_bytes());
    }
    child
}

/// Waits for a plugin started by [`spawn_plugin`].
pub fn finish(child: std::process::Child) -> Outcome {
    use std::os::unix::process::ExitStatusExt;
    let out = child.wait_with_output().expect("waiting for plugin");
    Outcome {
        success: out.status.success(),
        killed: out.status.signal().is_some(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn host_routes() -> Vec<IpNet> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        let text = Command::new("ip")
            .args([fam, "-o", "route", "show", "table", "all"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            let mut first = words.next().unwrap_or("");
            if matches!(
                first,
                "local" | "broadcast" | "unicast" | "anycast" | "multicast"
            ) {
                first = words.next().unwrap_or("");
            }
            let net = if first.contains('/') {
                first.parse().ok()
            } else {
                first.parse::<IpAddr>().ok().map(IpNet::from)
            };
            out.extend(net);
        }
    }
    out
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// A dual-stack pair of test subnets, unique within this test process and overlapping
/// no route of the machine (`10.99.<k>.0/24`, `fd00:10:99:<k>::/64`).
pub fn pick_subnets() -> (Ipv4Net, Ipv6Net) {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let routes = host_routes();
    loop {
        let k = NEXT.fetch_add(1, Ordering::SeqCst);
        assert!(
            k < 250,
            "no free 10.99.<k>.0/24 test subnet: the machine routes them all"
        );
        let v4 = Ipv4Net::new(Ipv4Addr::new(10, 99, k as u8, 0), 24).expect("v4 net");
        let v6 = Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x10, 0x99, k as u16, 0, 0, 0, 0), 64)
            .expect("v6 net");
        let clash = routes
            .iter()
            .any(|r| overlaps(r, &IpNet::V4(v4)) || overlaps(r, &IpNet::V6(v6)));
        if !clash {
            return (v4, v6);
        }
    }
}

/// The first of `candidates` that overlaps no route of the machine.
pub fn free_v4_net(candidates: &[&str]) -> Ipv4Net {
    let routes = host_routes();
    candidates
        .iter()
        .filter_map(|c| c.parse::<Ipv4Net>().ok())
        .find(|c| !routes.iter().any(|r| overlaps(r, &IpNet::V4(*c))))
        .unwrap_or_else(|| panic!("every candidate test range {candidates:?} overlaps a route"))
}

/// The `n`th address of a subnet.
pub fn nth(net: IpNet, n: u32) -> IpAddr {
    match net {
        IpNet::V4(v) => IpAddr::V4(Ipv4Addr::from(u32::from(v.network()) + n)),
        IpNet::V6(v) => IpAddr::V6(Ipv6Addr::from(u128::from(v.network()) + u128::from(n))),
    }
}

/// The `ipam` section for a dual-stack (or v4-only) flow, with default-route `gw`s.
pub fn ipam_section(kind: IpamKind, data_dir: &Path, v4: Ipv4Net, v6: Option<Ipv6Net>) -> Value {
    let mut ranges = vec![json!([{"subnet": v4.to_string()}])];
    let mut routes = vec![json!({"dst": "0.0.0.0/0", "gw": nth(IpNet::V4(v4), 1).to_string()})];
    if let Some(v6) = v6 {
        ranges.push(json!([{"subnet": v6.to_string()}]));
        routes.push(json!({"dst": "::/0", "gw": nth(IpNet::V6(v6), 1).to_string()}));
    }
    let mut ipam = json!({"type": kind.type_name(), "ranges": ranges, "routes": routes,
        "dataDir": data_dir});
    if kind == IpamKind::Kipam {
        ipam["reuseDelaySeconds"] = json!(0);
    }
    ipam
}

/// What a runtime keeps per attachment: the config it used and the cached ADD result.
#[derive(Debug, Clone)]
pub struct Attached {
    /// `CNI_CONTAINERID`.
    pub id: String,
    /// `CNI_NETNS`.
    pub netns: String,
    /// The ADD result (prevResult for CHECK and DEL).
    pub result: Value,
}

impl Attached {
    /// The addresses of the result's `ips`, without prefixes.
    pub fn ips(&self) -> Vec<IpAddr> {
        result_ips(&self.result)
    }
}

/// The addresses listed in a result's `ips`.
pub fn result_ips(result: &Value) -> Vec<IpAddr> {
    result["ips"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i["address"].as_str()?.parse::<IpNet>().ok())
                .map(|n| n.addr())
                .collect()
        })
        .unwrap_or_default()
}

/// A runtime for one network: its sandbox host namespace, its data dir, its CNI_PATH.
pub struct Runtime {
    /// The namespace that plays the host.
    pub host: Netns,
    /// The IPAM `dataDir` (kipamd's data directory in daemon mode).
    pub data_dir: TempDir,
    /// The IPAM plugin.
    pub kind: IpamKind,
    cni_path: String,
    /// kipamd, in daemon mode.
    pub daemon: Option<Kipamd>,
    tag: String,
}

impl Runtime {
    /// A fresh sandbox: host namespace with bridge netfilter off inside it.
    pub fn new(kind: IpamKind, tag: &str) -> Runtime {
        let host = Netns::new(&format!("{tag}-host"));
        // Per-namespace, and only this sandbox's: bridged test traffic must not meet the
        // machine's iptables FORWARD policy (pitfall 5).
        let _ = host.try_exec(&["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"]);
        let _ = host.try_exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.bridge.bridge-nf-call-ip6tables=0",
        ]);
        let kipam_dir = IpamKind::Kipam
            .binary()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let data_dir = TempDir::new(tag);
        let daemon = (kind == IpamKind::KipamDaemon).then(|| Kipamd::start(data_dir.path()));
        Runtime {
            host,
            data_dir,
            kind,
            cni_path: format!("{kipam_dir}:{PLUGIN_DIR}"),
            daemon,
            tag: format!("{tag}{}", unique()),
        }
    }

    /// The `ipam` section for this runtime's plugin: [`ipam_section`] for the standalone
    /// and reference plugins; for daemon mode, pools on kipamd for the same subnets
    /// (gateway `.1`, no reuse delay) and `daemonSocket` + `pools`.
    pub fn ipam_section(&self, v4: Ipv4Net, v6: Option<Ipv6Net>) -> Value {
        let Some(d) = &self.daemon else {
            return ipam_section(self.kind, self.data_dir.path(), v4, v6);
        };
        let mut pools = vec![d.pool(&format!("{}-v4", self.tag), IpNet::V4(v4))];
        let mut routes = vec![json!({"dst": "0.0.0.0/0", "gw": nth(IpNet::V4(v4), 1).to_string()})];
        if let Some(v6) = v6 {
            pools.push(d.pool(&format!("{}-v6", self.tag), IpNet::V6(v6)));
            routes.push(json!({"dst": "::/0", "gw": nth(IpNet::V6(v6), 1).to_string()}));
        }
        json!({"type": "kipam", "daemonSocket": d.socket, "pools": pools, "routes": routes})
    }

    /// Creates a bridge in the sandbox with a fixed MAC (pitfall 2).
    pub fn bridge(&self, name: &str) {
        self.host
            .exec(&["ip", "link", "add", name, "type", "bridge"]);
        let n = unique() % 250;
        self.host.exec(&[
            "ip",
            "link",
            "set",
            name,
            "address",
            &format!("02:00:00:99:{n:02x}:01"),
        ]);
        self.host.exec(&["ip", "link", "set", name, "up"]);
    }

    /// Creates an up parent link for macvlan/ipvlan in the sandbox: a dummy, or, on
    /// kernels built without the dummy driver, one end of a veth pair whose peer stays
    /// in the sandbox (macvlan bridge mode switches between its ports either way).
    pub fn parent_link(&self, name: &str) {
        if !self
            .host
            .try_exec(&["ip", "link", "add", name, "type", "dummy"])
        {
            let peer = format!("{name}p");
            self.host.exec(&[
                "ip", "link", "add", name, "type", "veth", "peer", "name", &peer,
            ]);
            self.host.exec(&["ip", "link", "set", &peer, "up"]);
        }
        self.host.exec(&["ip", "link", "set", name, "up"]);
    }

    /// Runs the main plugin named by `conf.type` in the sandbox, as a runtime does.
    pub fn exec(&self, cmd: &str, id: &str, netns: &str, conf: &Value) -> Outcome {
        let plugin = conf["type"].as_str().unwrap_or("missing-type");
        let vars = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns),
            ("CNI_IFNAME", "eth0"),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAMESPACE=test;K8S_POD_NAME=pod",
            ),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        exec_plugin(
            Some(&self.host),
            &Path::new(PLUGIN_DIR).join(plugin),
            &vars,
            conf,
        )
    }

    /// ADD; returns the attachment with its cached result.
    pub fn add(&self, id: &str, netns: &Netns, conf: &Value) -> Attached {
        let result = self
            .exec("ADD", id, &netns.path(), conf)
            .expect_ok(&format!("ADD {id}"));
        Attached {
            id: id.to_owned(),
            netns: netns.path(),
            result,
        }
    }

    /// CHECK with the cached result as prevResult.
    pub fn check(&self, att: &Attached, conf: &Value) -> Outcome {
        self.exec("CHECK", &att.id, &att.netns, &with_prev(conf, &att.result))
    }

    /// DEL with the cached result as prevResult.
    pub fn del(&self, att: &Attached, conf: &Value) -> Outcome {
        self.exec("DEL", &att.id, &att.netns, &with_prev(conf, &att.result))
    }

    /// Calls the IPAM plugin directly (not through an interface plugin).
    pub fn ipam(&self, cmd: &str, id: &str, cni_args: &str, conf: &Value) -> Outcome {
        let vars = [
            ("CNI_COMMAND", cmd),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", "/var/run/netns/kipam-does-not-exist"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", cni_args),
            ("CNI_PATH", self.cni_path.as_str()),
        ];
        exec_plugin(None, &self.kind.binary(), &vars, conf)
    }

    /// Asserts that none of `ips` is still held on the network: each can be requested
    /// statically by a probe attachment (which is released again).
    pub fn assert_free(&self, conf: &Value, ips: &[IpAddr]) {
        for ip in ips {
            let probe = format!("probe-{}", unique());
            let args = format!("IgnoreUnknown=1;IP={ip}");
            let out = self.ipam("ADD", &probe, &args, conf);
            assert!(
                out.success,
                "{ip} is still held: {} {}",
                out.stdout, out.stderr
            );
            let mut c = conf.clone();
            c["prevResult"] = out.json();
            self.ipam("DEL", &probe, "", &c).expect_ok("probe DEL");
        }
    }

    /// Asserts the sandbox has no veth left (the bridge itself may stay). The kernel
    /// tears down a deleted namespace, and with it the veth peers, asynchronously, so
    /// this waits up to 5 s before calling anything a leftover.
    pub fn assert_no_veths(&self) {
        let mut links = String::new();
        for _ in 0..50 {
            links = self
                .host
                .exec(&["ip", "-o", "link", "show", "type", "veth"]);
            if links.trim().is_empty() {
                return;
            }
            nap(100_000);
        }
        panic!("leftover veths: {links}");
    }
}

/// `conf` with `prevResult` set.
pub fn with_prev(conf: &Value, prev: &Value) -> Value {
    let mut c = conf.clone();
    c["prevResult"] = prev.clone();
    c
}

/// The store integrity check after the crash test: SQLite's own `integrity_check`, then
/// kipam's (every address in exactly one state, handles agree with blocks, indexes agree
/// with block bodies, no address held twice).
pub fn assert_store_integrity(data_dir: &Path) {
    let store = kipam_store::SqliteStore::open(data_dir, &kipam_store::SqliteOptions::default())
        .expect("the store opens after the crash storm");
    store
        .check_integrity()
        .expect("SQLite integrity_check passes");
    let ipam = kipam_store::IpamStore::new(store);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let report = ipam
        .check_integrity(now)
        .expect("the IPAM integrity check runs");
    assert!(
        report.ok(),
        "store integrity problems: {:?}",
        report.problems
    );
}

/// A small deterministic PRNG (xorshift64*), seeded per test and printed, so a failing
/// crash schedule can be replayed.
pub struct Rng(u64);

impl Rng {
    /// Seeds from the clock (or `KIPAM_TEST_SEED`) and prints the seed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("KIPAM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        println!("{test}: seed {seed} (KIPAM_TEST_SEED to replay)");
        Rng(seed)
    }

    /// Next number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Sleeps a little (used between kill decisions).
pub fn nap(micros: u64) {
    std::thread::sleep(Duration::from_micros(micros));
}

/// A kipamd the daemon-mode tests run: its own data directory, a loopback port and a unix
/// socket; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Kipamd {
    child: Option<std::process::Child>,
    /// The unix socket the plugin talks to.
    pub socket: PathBuf,
    /// `host:port` of its TCP listener (admin without tokens, on loopback).
    pub addr: String,
    data: PathBuf,
}

/// kipamd's binary: built next to `kipam` in the same target directory. A workspace test
/// run builds it; a run of this crate alone builds it here first.
pub fn kipamd_binary() -> PathBuf {
    let kipam = PathBuf::from(env!("CARGO_BIN_EXE_kipam"));
    let path = kipam.with_file_name("kipamd");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kipam-server", "--bin", "kipamd"])
            .status()
            .expect("run cargo to build kipamd");
        assert!(status.success(), "building kipamd failed");
    }
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Kipamd {
    /// Starts kipamd on `data` and waits until it is ready.
    pub fn start(data: &Path) -> Kipamd {
        let socket = data.join("kipamd.sock");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut d = Kipamd {
            child: None,
            socket,
            addr,
            data: data.to_path_buf(),
        };
        d.launch();
        d
    }

    fn launch(&mut self) {
        let child = Command::new(kipamd_binary())
            .arg("--data")
            .arg(&self.data)
            .arg("--listen")
            .arg(&self.addr)
            .arg("--socket")
            .arg(&self.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kipamd");
        self.child = Some(child);
        let client =
            kipam_api::client::Client::new(kipam_api::client::Endpoint::Unix(self.socket.clone()))
                .with_timeout(Duration::from_secs(2));
        for _ in 0..300 {
            if client.ready().is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("kipamd did not become ready on {}", self.socket.display());
    }

    /// Stops kipamd gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..500 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same data, socket and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Creates a pool for `cidr` (gateway `.1`, no reuse delay) and returns its name.
    pub fn pool(&self, name: &str, cidr: IpNet) -> String {
        let mut c = kipam_core::PoolConfig::new(name, cidr);
        c.reuse_delay_seconds = 0;
        c.gateway = Some(nth(cidr, 1));
        c.purpose = kipam_core::Purpose::Pod;
        let client =
            kipam_api::client::Client::new(kipam_api::client::Endpoint::Tcp(self.addr.clone()));
        client
            .create_pool(&c)
            .expect("create the test pool on kipamd");
        name.to_string()
    }
}

impl Drop for Kipamd {
    fn drop(&mut self) {
        self.stop();
    }
}
