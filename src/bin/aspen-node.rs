//! `aspen-node --config FILE`: runs one node until Ctrl-C (or SIGTERM), or until it fails.
//! `aspen-node cluster --nodes N --data-dir DIR`: a local cluster of N node processes.
//! Parses arguments and calls the library; nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "aspen-node", version, about = "Run an Aspen node")]
struct Args {
    /// The node's TOML config (see config/node.toml); ASPEN_SECTION__KEY variables override it.
    #[arg(long, short, default_value = "config/node.toml")]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<NodeCommand>,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Run a local cluster: N node processes on loopback, formed into one cluster.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Each node gets DIR/nodeN (config, data, log); kept across runs.
        #[arg(long, default_value = "./data/cluster")]
        data_dir: PathBuf,
        /// Node N listens on BASE+2(N-1) (QUIC) and BASE+2(N-1)+1 (HTTP); default: free ports.
        #[arg(long)]
        base_port: Option<u16>,
    },
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Runtime::new() {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("aspen-node: cannot start the runtime: {error}");
            None
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(NodeCommand::Cluster {
        nodes,
        data_dir,
        base_port,
    }) = args.command
    {
        let Some(runtime) = runtime() else {
            return ExitCode::FAILURE;
        };
        return runtime.block_on(aspen::local_cluster::run(nodes, &data_dir, base_port));
    }
    let config = match aspen::config::NodeConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("aspen-node: {}: {error}", args.config.display());
            return ExitCode::from(2);
        }
    };
    aspen::node::init_logging(&config.node.log_level);
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(aspen::node::run_until_stopped(config))
}
