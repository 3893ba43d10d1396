//! `kipamctl release HANDLE`: releases every address the handle holds. Idempotent:
//! releasing a handle that holds nothing succeeds and releases nothing.

use clap::Args;

use crate::output::Table;
use crate::{CliError, Ctx, Outcome};

/// Arguments of `release`.
#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The owner key whose addresses to release.
    pub handle: String,
}

/// Runs `release`.
pub fn run(ctx: &Ctx, a: ReleaseArgs) -> Result<Outcome, CliError> {
    let r = ctx.client()?.release(&a.handle)?;
    ctx.out.either(&r, || {
        if r.released.is_empty() {
            return format!("{} held nothing; nothing released", r.handle);
        }
        let mut t = Table::new(&["RELEASED", "POOL"]);
        for a in &r.released {
            t.row(vec![a.address.to_string(), a.pool.clone()]);
        }
        t.render()
    })?;
    Ok(Outcome::Ok)
}
