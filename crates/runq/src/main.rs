//! `runq`: what Docker, containerd and Podman call instead of runc.

use std::process::ExitCode;

use runq::log::Logger;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let invocation = match runq::cli::parse(&argv) {
        Ok(invocation) => invocation,
        Err(error) => {
            let (file, json) = runq::cli::log_flags(&argv);
            Logger { file, json }.error(&error.to_string());
            return ExitCode::FAILURE;
        }
    };
    let logger = Logger {
        file: invocation.log.clone(),
        json: invocation.log_json,
    };
    match runq::commands::dispatch(invocation, &logger) {
        Ok(code) => ExitCode::from(runq_shared::protocol::exit_status(code)),
        Err(error) => {
            logger.error(&format!("{error:#}"));
            ExitCode::FAILURE
        }
    }
}
