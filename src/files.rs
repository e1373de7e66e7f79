//! The data directory's permissions: the directory and every directory in it 0700, every file
//! 0600 (keys, the redb file, snapshots, tokens, addresses, logs). Files the node creates get
//! these modes when created; [`secure_data_dir`] tightens what an older version, another tool
//! or an operator left wider, at every start, and says what it changed.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of the data directory and the directories in it.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file in the data directory.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with mode 0700.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Options that create a file with mode 0600 (an existing file keeps its mode).
pub fn private_file() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.mode(FILE_MODE);
    options
}

/// Creates `dir` with mode 0700 if missing, then removes the group and other bits from it and
/// from everything below it (symbolic links are left alone). Returns each path it changed,
/// with its mode before.
pub fn secure_data_dir(dir: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    create_private_dir(dir)?;
    let mut changed = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let metadata = std::fs::symlink_metadata(&path)?;
        let wanted = if metadata.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
            DIR_MODE
        } else if metadata.is_file() {
            FILE_MODE
        } else {
            continue;
        };
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & wanted))
                .map_err(|e| {
                    std::io::Error::new(e.kind(), format!("chmod {}: {e}", path.display()))
                })?;
            changed.push((path, mode));
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    // Proves the sweep removes group and other bits from the directory, a nested directory
    // and their files, reports exactly those, and leaves private ones as they are.
    #[test]
    fn wide_modes_are_tightened_and_reported() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir_all(dir.join("snapshots")).unwrap();
        std::fs::write(dir.join("aspen.redb"), b"x").unwrap();
        std::fs::write(dir.join("snapshots/s1"), b"x").unwrap();
        private_file()
            .write(true)
            .create(true)
            .open(dir.join("node.key"))
            .unwrap();
        for (path, wide) in [("", 0o755), ("snapshots", 0o775), ("aspen.redb", 0o644)] {
            std::fs::set_permissions(dir.join(path), std::fs::Permissions::from_mode(wide))
                .unwrap();
        }
        std::fs::set_permissions(
            dir.join("snapshots/s1"),
            std::fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        let mut changed = secure_data_dir(&dir).unwrap();
        changed.sort();
        assert_eq!(
            changed,
            vec![
                (dir.clone(), 0o755),
                (dir.join("aspen.redb"), 0o644),
                (dir.join("snapshots"), 0o775),
                (dir.join("snapshots/s1"), 0o666),
            ]
        );
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("snapshots")), 0o700);
        assert_eq!(mode(&dir.join("aspen.redb")), 0o600);
        assert_eq!(mode(&dir.join("snapshots/s1")), 0o600);
        assert_eq!(mode(&dir.join("node.key")), 0o600);
        assert!(
            secure_data_dir(&dir).unwrap().is_empty(),
            "a second sweep changed something"
        );
        // A missing directory is created private.
        secure_data_dir(&root.path().join("fresh")).unwrap();
        assert_eq!(mode(&root.path().join("fresh")), 0o700);
    }
}
