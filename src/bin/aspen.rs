//! `aspen`: the command-line client (etcdctl-like). Parses arguments and calls the library.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc, as in `aspen-node`: `aspen bench` allocates per request too, on the cores the
/// nodes it measures run on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = aspen::cli::Cli::parse();
    // The load tool needs more than one thread to keep up with a cluster; everything else
    // is one request at a time.
    let mut builder = if matches!(cli.command, aspen::cli::CliCommand::Bench { .. }) {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("Error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(aspen::cli::run(cli))
}
