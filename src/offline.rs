//! The offline commands of `aspen-node`, run on a data directory with no node running:
//! `restore` (a new data directory from a backup file) and `check` (integrity check).
//! Each prints its answer on stdout and, on failure, one line per problem on stderr, and returns
//! the exit code: 0 done and sound, 1 a problem found or the command failed.

use std::path::Path;
use std::process::ExitCode;

use crate::storage::check::{CheckReport, check_data_dir};

/// `aspen-node restore --from FILE --data-dir DIR`.
pub fn restore(from: &Path, dir: &Path) -> ExitCode {
    match crate::storage::restore_backup(
        from,
        dir,
        crate::storage::store::CACHE_BYTES_DEFAULT,
        crate::clock::now_ms(),
    ) {
        Ok(summary) => {
            println!(
                "restored {} keys and {} leases at revision {} into {}; start the node with \
                 node.data_dir = {:?} (every member of a new cluster is restored from the same file)",
                summary.keys,
                summary.leases,
                summary.revision,
                dir.display(),
                dir.display().to_string()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("aspen-node restore: {}: {error}", from.display());
            ExitCode::FAILURE
        }
    }
}

/// `aspen-node check --data-dir DIR`.
pub fn check(dir: &Path, json: bool) -> ExitCode {
    let report = match check_data_dir(dir) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("aspen-node check: {}: {error}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", check_text(dir, &report));
    }
    if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        for problem in &report.problems {
            eprintln!("aspen-node check: {}: {problem}", dir.display());
        }
        if report.problems_not_listed > 0 {
            eprintln!(
                "aspen-node check: {}: and {} more problems",
                dir.display(),
                report.problems_not_listed
            );
        }
        ExitCode::FAILURE
    }
}

fn check_text(dir: &Path, report: &CheckReport) -> String {
    let index = |i: Option<u64>| i.map_or("none".to_string(), |i| i.to_string());
    let meta = &report.meta;
    let mut text = format!(
        "{}: {}\n\
         log: {} entries, last purged {}, last {}\n\
         raft: committed {}, last applied {} ({} entries to replay on start)\n\
         state: {} keys, {} leases, {} vaults, revision {}\n",
        dir.display(),
        if report.is_ok() {
            "ok"
        } else {
            "PROBLEMS FOUND"
        },
        report.log_entries,
        index(meta.last_purged),
        index(meta.last_log_index),
        index(meta.committed),
        index(meta.last_applied),
        report.replay_on_start,
        report.keys,
        report.leases,
        report.vaults,
        report.revision,
    );
    if report.format == crate::storage::schema::FORMAT_VERSION_BEFORE_VAULTS {
        text.push_str(&format!(
            "format: {} (a node opening it upgrades it to {})\n",
            report.format,
            crate::storage::schema::FORMAT_VERSION
        ));
    }
    if let Some(snapshot) = &report.snapshot {
        text.push_str(&format!("snapshot: {snapshot}\n"));
    }
    text
}
