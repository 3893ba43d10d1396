//! The `kipam` binary: gathers the process's environment and stdin and hands them to
//! [`kipam_cni::run_process`] with the production backend factory. All logic lives in
//! the library so it can be tested without spawning processes.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    kipam_cni::trace::mark("main");
    // Non-UTF-8 values are passed on lossily; validation then refuses them by name.
    let vars: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.to_string_lossy().into_owned())))
        .collect();
    let stdin = std::io::stdin();
    let is_terminal = stdin.is_terminal();
    let mut stdout = std::io::stdout().lock();
    let code = kipam_cni::run_process(
        &vars,
        &mut stdin.lock(),
        is_terminal,
        &mut stdout,
        &kipam_cni::open_backend,
    );
    kipam_cni::trace::mark("exit");
    if code == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
