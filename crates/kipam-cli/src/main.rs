//! `kipamctl`: parses the command line, runs it with [`kipam_cli::run`], prints an error
//! with its hint on stderr and exits with the documented code (see `kipam_cli::error`).

use std::process::ExitCode;

use clap::Parser;
use kipam_cli::error::{EXIT_CONFLICT, EXIT_OK, EXIT_USAGE, chain};
use kipam_cli::{Cli, Outcome};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are "errors" to clap that go to stdout with success.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    match kipam_cli::run(cli) {
        Ok(Outcome::Ok) => ExitCode::from(EXIT_OK),
        Ok(Outcome::Found) => ExitCode::from(EXIT_CONFLICT),
        Err(e) => {
            eprintln!("kipamctl: {}", chain(&e));
            if let Some(h) = e.hint() {
                eprintln!("hint: {h}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
