//! `kipamctl completions SHELL`: prints a completion script generated from the same clap
//! definition as the parser (clap_complete), so completions never drift from the flags.
//!
//! bash: `kipamctl completions bash > /etc/bash_completion.d/kipamctl`;
//! zsh: `kipamctl completions zsh > "${fpath[1]}/_kipamctl"`;
//! fish: `kipamctl completions fish > ~/.config/fish/completions/kipamctl.fish`.

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use crate::{Cli, CliError, Ctx, Outcome};

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Runs `completions`.
pub fn run(ctx: &Ctx, a: CompletionsArgs) -> Result<Outcome, CliError> {
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut Cli::command(), "kipamctl", &mut buf);
    ctx.out.text(&String::from_utf8_lossy(&buf))?;
    Ok(Outcome::Ok)
}
