//! `aspen-node --config FILE`: runs one node until Ctrl-C (or SIGTERM), or until it fails.
//! Parses arguments and calls the library; nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(name = "aspen-node", version, about = "Run an Aspen node")]
struct Args {
    /// The node's TOML config (see config/node.toml); ASPEN_SECTION__KEY variables override it.
    #[arg(long, short, default_value = "config/node.toml")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match aspen::config::NodeConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aspen-node: {}: {error}", args.config.display());
            return ExitCode::from(2);
        }
    };
    aspen::node::init_logging(&config.node.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("aspen-node: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(aspen::node::run_until_stopped(config))
}
