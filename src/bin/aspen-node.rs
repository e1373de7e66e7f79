//! `aspen-node --config FILE`: runs one node until Ctrl-C (or SIGTERM), or until it fails.
//! `aspen-node cluster --nodes N --data-dir DIR`: a local cluster of N node processes.
//! `aspen-node restore --from FILE --data-dir DIR`, `aspen-node check --data-dir DIR`: offline.
//! Parses arguments and calls the library; nothing else lives here.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: a node allocates and frees small buffers per request
/// (frames, keys, values, QUIC packets), where glibc's allocator took about 6% of a leader's CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Create a new node's data directory from a backup file (`aspen admin backup`); the file
    /// is checked whole first, and a corrupt or truncated one is refused with nothing written.
    Restore {
        #[arg(long)]
        from: PathBuf,
        /// Must not hold a store yet.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Check a stopped node's data directory: redb's integrity check, the cross-storage
    /// validation, a decode of every log entry, key and lease, and the current snapshot.
    /// Exits 0 with a summary, or 1 naming each problem.
    Check {
        #[arg(long)]
        data_dir: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    match args.command {
        Some(NodeCommand::Cluster {
            nodes,
            data_dir,
            base_port,
        }) => {
            let Some(runtime) = runtime() else {
                return ExitCode::FAILURE;
            };
            return runtime.block_on(aspen::local_cluster::run(nodes, &data_dir, base_port));
        }
        Some(NodeCommand::Restore { from, data_dir }) => {
            return aspen::offline::restore(&from, &data_dir);
        }
        Some(NodeCommand::Check { data_dir, json }) => {
            return aspen::offline::check(&data_dir, json);
        }
        None => {}
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
