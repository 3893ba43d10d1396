//! `kipamctl external add|list|remove|import`: networks used outside kipam (VPC,
//! on-prem, VPN). kipam never hands out their addresses and refuses pools that overlap
//! them within their scope.
//!
//! `import` reads CSV (`name,cidr[,scope[,description]]`) or JSON/YAML (a list, or
//! `{"items": [...]}` as `external list -o json` prints) and checks every entry before
//! sending the first, so a typo on line 900 does not leave 899 networks half-imported.
//! Networks that exist already with the same CIDR and scope are skipped, so an import can
//! be re-run. Progress goes to stderr.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::{Args, Subcommand};
use ipnet::IpNet;
use kipam_api::ErrorCode;
use kipam_api::networks::ExternalNetworkList;
use kipam_core::ScopeNetwork;
use serde::Serialize;
use serde_json::json;

use crate::error::{EXIT_OK, chain, client_exit_code};
use crate::output::Table;
use crate::{CliError, Ctx, Outcome, parse};

/// `external ...`.
#[derive(Debug, Subcommand)]
pub enum ExternalCmd {
    /// Add an external network.
    Add(AddArgs),
    /// List external networks.
    List,
    /// Remove an external network.
    Remove {
        /// Its name.
        name: String,
    },
    /// Import many external networks from a CSV, JSON or YAML file (`-` for stdin).
    Import {
        /// The file: CSV `name,cidr[,scope[,description]]`, or JSON/YAML.
        file: PathBuf,
    },
}

/// Arguments of `external add`.
#[derive(Debug, Args)]
pub struct AddArgs {
    /// Unique name.
    pub name: String,
    /// The network, host bits zero.
    #[arg(value_parser = parse::cidr)]
    pub cidr: IpNet,
    /// The scope whose pools must not overlap it.
    #[arg(long, default_value = "default")]
    pub scope: String,
    /// Free text: owner, site, provider.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// The result of an import.
#[derive(Debug, Default, Serialize)]
pub struct ImportReport {
    /// Networks added.
    pub added: usize,
    /// Networks that existed already with the same CIDR and scope.
    pub unchanged: usize,
    /// Networks refused, with why.
    pub failed: Vec<ImportFailure>,
}

/// One refused network of an import.
#[derive(Debug, Serialize)]
pub struct ImportFailure {
    /// Its name.
    pub name: String,
    /// Its CIDR.
    pub cidr: IpNet,
    /// kipamd's answer.
    pub error: String,
    #[serde(skip)]
    code: u8,
}

/// Runs `external ...`.
pub fn run(ctx: &Ctx, cmd: ExternalCmd) -> Result<Outcome, CliError> {
    let c = ctx.client()?;
    match cmd {
        ExternalCmd::Add(a) => {
            let n = c.add_external_network(&ScopeNetwork {
                name: a.name,
                cidr: a.cidr,
                scope: a.scope,
                description: a.description,
            })?;
            ctx.out.either(&n, || table(std::slice::from_ref(&n)))?;
        }
        ExternalCmd::List => {
            let l = c.list_external_networks()?;
            ctx.out.either(&l, || {
                if l.items.is_empty() {
                    "no external networks".into()
                } else {
                    table(&l.items)
                }
            })?;
        }
        ExternalCmd::Remove { name } => {
            c.delete_external_network(&name)?;
            ctx.out.either(&json!({"removed": name}), || {
                format!("removed external network {name}")
            })?;
        }
        ExternalCmd::Import { file } => {
            let nets = parse::external_networks(&file)?;
            let existing = c.list_external_networks()?;
            let report = import(&c, &nets, &existing);
            ctx.out.either(&report, || {
                format!(
                    "imported {} external networks: {} added, {} unchanged, {} failed",
                    nets.len(),
                    report.added,
                    report.unchanged,
                    report.failed.len()
                )
            })?;
            if let Some(first) = report.failed.first() {
                return Err(CliError::Batch {
                    failed: report.failed.len(),
                    total: nets.len(),
                    what: "external networks",
                    code: first.code,
                });
            }
        }
    }
    Ok(Outcome::Ok)
}

fn import(
    c: &kipam_api::client::Client,
    nets: &[ScopeNetwork],
    existing: &ExternalNetworkList,
) -> ImportReport {
    let mut report = ImportReport::default();
    let tty = std::io::stderr().is_terminal();
    let total = nets.len();
    let mut last_pct = None;
    for (i, n) in nets.iter().enumerate() {
        let same = existing
            .items
            .iter()
            .any(|e| e.name == n.name && e.cidr == n.cidr && e.scope == n.scope);
        if same {
            report.unchanged += 1;
        } else {
            match c.add_external_network(n) {
                Ok(_) => report.added += 1,
                Err(e) if e.code() == Some(ErrorCode::AlreadyExists) => {
                    report.failed.push(ImportFailure {
                        name: n.name.clone(),
                        cidr: n.cidr,
                        error: "a network of this name exists with another CIDR or scope; remove it first".into(),
                        code: client_exit_code(&e),
                    });
                }
                Err(e) => {
                    let code = client_exit_code(&e);
                    let error = chain(&e);
                    eprintln!("kipamctl: {} ({}): {error}", n.name, n.cidr);
                    report.failed.push(ImportFailure {
                        name: n.name.clone(),
                        cidr: n.cidr,
                        error,
                        code: if code == EXIT_OK { 1 } else { code },
                    });
                    // Unreachable once is unreachable for the rest: stop, do not spam.
                    if code == crate::error::EXIT_UNREACHABLE {
                        break;
                    }
                }
            }
        }
        progress(i + 1, total, tty, &mut last_pct);
    }
    report
}

/// Progress on stderr for long imports: a line rewritten in place on a terminal, a line
/// every 10% otherwise (logs stay short).
fn progress(done: usize, total: usize, tty: bool, last_pct: &mut Option<usize>) {
    if total < 20 {
        return;
    }
    let pct = done * 100 / total;
    let mut err = std::io::stderr().lock();
    if tty {
        let _ = write!(
            err,
            "\rimporting external networks: {done}/{total} ({pct}%)"
        );
        if done == total {
            let _ = writeln!(err);
        }
    } else if last_pct.is_none_or(|l| pct / 10 > l / 10) || done == total {
        let _ = writeln!(err, "importing external networks: {done}/{total} ({pct}%)");
        *last_pct = Some(pct);
    }
}

/// External networks as a table.
pub fn table(nets: &[ScopeNetwork]) -> String {
    let mut t = Table::new(&["NAME", "CIDR", "SCOPE", "DESCRIPTION"]);
    for n in nets {
        t.row(vec![
            n.name.clone(),
            n.cidr.to_string(),
            n.scope.clone(),
            n.description.clone(),
        ]);
    }
    t.render()
}
