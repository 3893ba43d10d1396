//! `kipamd`: parses flags and hands over to [`kipam_server::run`]; `kipamd hash-token`
//! prints a tokens-file line.

use std::io::{IsTerminal, Read};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kipam_server::auth::{Role, token_line};
use kipam_server::config::ServeArgs;

/// kipamd: the kipam IPAM daemon. Serves the HTTP API on TCP (default 127.0.0.1:7733)
/// and a unix socket, the dashboard at /, and /metrics.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Reads a token from stdin and prints its tokens-file line `ROLE SHA256HEX [name]`.
    HashToken {
        /// Role of the token: viewer, allocator or admin.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// A name for logs.
        #[arg(long)]
        name: Option<String>,
    },
}

/// mimalloc: see the workspace Cargo.toml (huge pages for a large state, less memory).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashToken { role, name }) => hash_token(&role, name.as_deref()),
        None => serve(&cli.serve),
    }
}

fn hash_token(role: &str, name: Option<&str>) -> ExitCode {
    let Some(role) = Role::parse(role) else {
        eprintln!("kipamd: unknown role {role:?}; use viewer, allocator or admin");
        return ExitCode::from(2);
    };
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut token) {
        eprintln!("kipamd: cannot read the token from stdin: {e}");
        return ExitCode::FAILURE;
    }
    let token = token.trim_end_matches(['\r', '\n']);
    if token.is_empty() || token.contains(char::is_whitespace) {
        eprintln!("kipamd: the token on stdin must be one non-empty word");
        return ExitCode::from(2);
    }
    println!("{}", token_line(role, token, name));
    ExitCode::SUCCESS
}

fn serve(args: &ServeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KIPAM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = match args.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kipamd: {}", kipam_server::error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kipamd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        let listeners = kipam_server::Listeners::bind(&config).await?;
        kipam_server::run(listeners, config, kipam_server::shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kipamd: {}", kipam_server::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
