//! `aspen`: the command-line client (etcdctl-like). Parses arguments and calls the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = aspen::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(aspen::cli::run(cli))
}
