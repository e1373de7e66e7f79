//! Holds the layer table of `../shared/DESIGN.md` ("Module layout and layers") against every
//! `crate::` path in `src/`: a module may name only modules of its own or lower layers, never
//! `testing` or `fuzzing`, and never what the design forbids outright (`net` naming storage,
//! actors or node; `actors` naming node, supervisor or the net servers; `client` and `cli`
//! naming storage, sql, actors or command); no top-level modules name each other in a circle;
//! and no files do either (a name reached through a `mod.rs` re-export counts for the file
//! that defines it).
//!
//! The code does not follow the table yet (the architecture issue moves it there): the
//! imports that break it today are listed in `KNOWN`, and the test fails on any import that
//! breaks a rule and is not listed, and on any listed one that no longer occurs, so the list
//! can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layer of each module, by the longest matching path. Current modules are mapped to the
/// layers of their intended place in the design's layout.
const LAYERS: &[(&str, u8)] = &[
    ("api", 0),
    ("limits", 0),
    ("clock", 0),
    ("config", 0),
    ("metrics", 0),
    ("fault", 0),
    ("sync", 0),
    ("flush", 0),
    ("files", 0),
    ("command", 1),
    ("storage", 2),
    ("net::frame", 2),
    ("net::endpoint", 2),
    ("net::connections", 2),
    ("net::raft", 2),
    ("sql", 3),
    ("net", 3),
    ("client", 3),
    ("etcd", 3),
    ("actors", 4),
    ("supervisor", 5),
    ("node", 6),
    ("cli", 7),
    ("bench", 7),
    ("local_cluster", 7),
    ("offline", 7),
    ("admin", 7),
];

/// Modules only tests, benches and `fuzz/` may name.
const TEST_ONLY: &[&str] = &["testing", "fuzzing"];

/// (importer prefix, imported prefix, rule): forbidden whatever the layers say.
const NEVER: &[(&str, &str, &str)] = &[
    ("net", "storage", "net never names storage"),
    ("net", "actors", "net never names the actors"),
    ("net", "node", "net never names node"),
    ("actors", "node", "actors never name node"),
    ("actors", "supervisor", "actors never name the supervisor"),
    (
        "actors",
        "net::service",
        "actors never name the net servers",
    ),
    (
        "actors",
        "net::raft_service",
        "actors never name the net servers",
    ),
    ("actors", "net::http", "actors never name the net servers"),
    ("actors", "net::admin", "actors never name the net servers"),
    ("client", "storage", "client never names storage"),
    ("client", "sql", "client never names sql"),
    ("client", "actors", "client never names the actors"),
    (
        "client",
        "command",
        "client never names the Raft log payload",
    ),
    ("cli", "storage", "cli never names storage"),
    ("cli", "sql", "cli never names sql"),
    ("cli", "actors", "cli never names the actors"),
    ("cli", "command", "cli never names the Raft log payload"),
];

/// Imports that break a rule today, as `file -> module`: the architecture issue's work list.
const KNOWN: &[&str] = &[];

/// Top-level modules that name each other in a circle today, each circle sorted.
const KNOWN_CIRCLES: &[&str] = &[];

/// Files that name each other in a circle today, each circle sorted.
const KNOWN_FILE_CIRCLES: &[&str] = &[];

/// The only files outside `storage` that may write the store (name `storage::StoreWrite`):
/// the StorageActor (every write: Raft's and `/admin/defrag`), the supervisor (the closing
/// commit), and the test harness and fuzz glue.
const STORE_WRITERS: &[&str] = &[
    "src/actors/storage.rs",
    "src/fuzzing/mod.rs",
    "src/fuzzing/sql.rs",
    "src/supervisor/mod.rs",
    "src/testing.rs",
];

fn layer(module: &str) -> Option<u8> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| within(module, prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|&(_, layer)| layer)
}

/// Whether `module` is `prefix` or inside it.
fn within(module: &str, prefix: &str) -> bool {
    module == prefix || module.starts_with(&format!("{prefix}::"))
}

/// The module a source file holds: `src/net/service.rs` is `net::service`.
fn module_of(path: &Path, src: &Path) -> String {
    let relative = path.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts
        .last()
        .is_some_and(|last| last == "mod" || last == "lib")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The module named by every `crate::` path in `code` (comments removed), to two segments,
/// expanding a group after `crate::` or after the first segment
/// (`crate::net::{frame::F, proto::P}`).
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut paths = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            if let Some(group) = after.strip_prefix('{') {
                // `crate::{limits::A, node::B}`: each item is a path of its own.
                let inner: String = group.chars().take_while(|c| *c != '}').collect();
                for item in inner.split(',') {
                    let item = item.trim();
                    let first = identifier(item);
                    let next = item[first.len()..].strip_prefix("::").unwrap_or("");
                    paths.insert(module_path(&first, next));
                }
                rest = after;
                continue;
            }
            let first = identifier(after);
            let tail = &after[first.len()..];
            if let Some(group) = tail.strip_prefix("::{") {
                let inner: String = group.chars().take_while(|c| *c != '}').collect();
                for item in inner.split(',') {
                    paths.insert(module_path(&first, item.trim()));
                }
            } else if let Some(next) = tail.strip_prefix("::") {
                paths.insert(module_path(&first, next));
            } else {
                paths.insert(first.clone());
            }
            rest = after;
        }
    }
    paths
}

/// The identifier `text` starts with.
fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// `first::second` when `rest` (what follows `first::`) starts with a module, that is a
/// segment followed by `::`; else `first` (an item of `first`: `crate::clock::now_ms()`).
fn module_path(first: &str, rest: &str) -> String {
    let second = identifier(rest);
    let is_module = second.starts_with(|c: char| c.is_ascii_lowercase()) && second != "self";
    let after = &rest[second.len()..];
    if is_module && after.starts_with("::") && !after.starts_with("::<") {
        format!("{first}::{second}")
    } else {
        first.to_string()
    }
}

/// Every rule `importer` breaks by naming `imported`.
fn broken(importer: &str, imported: &str) -> Option<String> {
    let top = |module: &str| module.split("::").next().unwrap_or("").to_string();
    if TEST_ONLY
        .iter()
        .any(|test_only| within(imported, test_only))
    {
        if TEST_ONLY.contains(&top(importer).as_str()) {
            return None;
        }
        return Some(format!("only tests, benches and fuzz/ may name {imported}"));
    }
    if TEST_ONLY.contains(&top(importer).as_str()) {
        return None;
    }
    if let Some((_, _, rule)) = NEVER
        .iter()
        .find(|(from, to, _)| within(importer, from) && within(imported, to))
    {
        // A layer-2 part of net naming its own kind is fine; the rule is about the servers.
        if !(within(imported, "net") && within(importer, "net")) {
            return Some(rule.to_string());
        }
    }
    // Equal layers may name each other (config names limits); circles are the cycle test's.
    let from = layer(importer)?;
    let Some(to) = layer(imported) else {
        return Some(format!("{imported} is in no layer of the table"));
    };
    (to > from).then(|| format!("layer {from} ({importer}) names layer {to} ({imported})"))
}

fn sources(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// (file, module, every module it names) for each source file of `src/`, binaries excepted.
fn imports(src: &Path) -> Vec<(PathBuf, String, BTreeSet<String>)> {
    let mut files = Vec::new();
    sources(src, &mut files);
    files.sort();
    let mut found = Vec::new();
    for path in files {
        let module = module_of(&path, src);
        if module.is_empty() || within(&module, "bin") {
            continue;
        }
        let code = std::fs::read_to_string(&path).expect("read source");
        found.push((path, module, crate_paths(&code)));
    }
    found
}

/// Top-level modules that name each other in a circle (Tarjan's strongly connected
/// components of "names" between top-level modules), each sorted and joined with ", ".
fn circles(src: &Path) -> Vec<String> {
    let top = |module: &str| module.split("::").next().unwrap_or("").to_string();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (_, module, names) in imports(src) {
        let from = top(&module);
        let targets = edges.entry(from.clone()).or_default();
        targets.extend(names.iter().map(|name| top(name)).filter(|to| *to != from));
    }
    strongly_connected(&edges)
}

/// The circles of `edges` (strongly connected components of more than one node), each sorted
/// and joined with ", ".
fn strongly_connected(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let nodes: Vec<String> = edges.keys().cloned().collect();
    let mut tarjan = Tarjan {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for node in &nodes {
        if !tarjan.index.contains_key(node) {
            tarjan.visit(node);
        }
    }
    let mut found: Vec<String> = tarjan
        .found
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|mut component| {
            component.sort();
            component.join(", ")
        })
        .collect();
    found.sort();
    found
}

struct Tarjan<'a> {
    edges: &'a BTreeMap<String, BTreeSet<String>>,
    index: BTreeMap<String, usize>,
    low: BTreeMap<String, usize>,
    stack: Vec<String>,
    found: Vec<Vec<String>>,
}

impl Tarjan<'_> {
    fn visit(&mut self, node: &str) {
        let index = self.index.len();
        self.index.insert(node.to_string(), index);
        self.low.insert(node.to_string(), index);
        self.stack.push(node.to_string());
        let targets: Vec<String> = self
            .edges
            .get(node)
            .map(|targets| targets.iter().cloned().collect())
            .unwrap_or_default();
        for target in targets {
            if !self.index.contains_key(&target) {
                self.visit(&target);
                let low = self.low[node].min(self.low[&target]);
                self.low.insert(node.to_string(), low);
            } else if self.stack.contains(&target) {
                let low = self.low[node].min(self.index[&target]);
                self.low.insert(node.to_string(), low);
            }
        }
        if self.low[node] == self.index[node] {
            let mut component = Vec::new();
            while let Some(member) = self.stack.pop() {
                let done = member == node;
                component.push(member);
                if done {
                    break;
                }
            }
            self.found.push(component);
        }
    }
}

/// Every `crate::` path in `code` (comments removed) as its segments, groups expanded one
/// level deep (`crate::a::{B, c::D}` is `a::B` and `a::c::D`; `crate::{a::B, c}` likewise).
fn crate_full_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let (prefix, tail) = path_segments(rest);
            match tail.strip_prefix('{') {
                Some(group) => {
                    let inner: String = group.chars().take_while(|c| *c != '}').collect();
                    for item in inner.split(',') {
                        let mut path = prefix.clone();
                        path.extend(path_segments(item.trim()).0);
                        paths.push(path);
                    }
                }
                None => paths.push(prefix),
            }
        }
    }
    paths
}

/// The `::`-separated identifiers `text` starts with, and what follows them (after a last
/// `::` when a group `{` comes next).
fn path_segments(text: &str) -> (Vec<String>, &str) {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        if rest.starts_with('{') {
            return (out, rest);
        }
        let name = identifier(rest);
        if name.is_empty() {
            return (out, rest);
        }
        rest = &rest[name.len()..];
        out.push(name);
        match rest.strip_prefix("::") {
            Some(next) if !next.starts_with('<') => rest = next,
            _ => return (out, rest),
        }
    }
}

/// For each module file, the names it re-exports with `pub use child::...` and the child
/// module each comes from (a glob takes every `pub` item the child file declares).
fn reexports(files: &[(PathBuf, String)]) -> BTreeMap<String, BTreeMap<String, String>> {
    let declared = |module: &str| -> Vec<String> {
        let Some((path, _)) = files.iter().find(|(_, m)| m == module) else {
            return Vec::new();
        };
        let code = std::fs::read_to_string(path).expect("read source");
        let mut names = Vec::new();
        for line in code.lines() {
            for kind in ["struct", "enum", "fn", "type", "const", "trait", "static"] {
                if let Some(rest) = line.strip_prefix(&format!("pub {kind} ")) {
                    names.push(identifier(rest));
                }
            }
        }
        names
    };
    let mut found: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (path, module) in files {
        let code = std::fs::read_to_string(path).expect("read source");
        let mut statement = String::new();
        for line in code.lines() {
            let line = line.trim();
            if statement.is_empty() && !line.starts_with("pub use ") {
                continue;
            }
            statement.push_str(line);
            if !line.ends_with(';') {
                continue;
            }
            let body = std::mem::take(&mut statement);
            let body = body["pub use ".len()..].trim_end_matches(';');
            let child = identifier(body);
            if child.is_empty() || child == "crate" || child == "self" || child == "super" {
                continue;
            }
            let child_module = format!("{module}::{child}");
            let names = match body[child.len()..].trim_start_matches("::") {
                "*" => declared(&child_module),
                group if group.starts_with('{') => group
                    .trim_matches(|c| c == '{' || c == '}')
                    .split(',')
                    .map(|item| identifier(item.trim()))
                    .collect(),
                single => vec![identifier(single)],
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                found
                    .entry(module.clone())
                    .or_default()
                    .insert(name, child_module.clone());
            }
        }
    }
    found
}

/// Files that name each other in a circle (Tarjan's strongly connected components of
/// "names something defined in"), a name reached through a `mod.rs` re-export counting for
/// the file that defines it; each sorted and joined with ", ".
fn file_circles(src: &Path) -> Vec<String> {
    let mut paths = Vec::new();
    sources(src, &mut paths);
    paths.sort();
    let files: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|path| {
            let module = module_of(&path, src);
            (path, module)
        })
        .filter(|(_, module)| !module.is_empty() && !within(module, "bin"))
        .collect();
    let modules: BTreeSet<&str> = files.iter().map(|(_, m)| m.as_str()).collect();
    let reexported = reexports(&files);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, module) in &files {
        let code = std::fs::read_to_string(path).expect("read source");
        let targets = edges.entry(module.clone()).or_default();
        for segments in crate_full_paths(&code) {
            // The deepest module file the path reaches, then a re-exported item's own file.
            let mut target = String::new();
            let mut rest = segments.as_slice();
            while let Some((first, tail)) = rest.split_first() {
                let next = if target.is_empty() {
                    first.clone()
                } else {
                    format!("{target}::{first}")
                };
                if !modules.contains(next.as_str()) {
                    break;
                }
                target = next;
                rest = tail;
            }
            if let Some(child) = rest
                .first()
                .and_then(|item| reexported.get(&target)?.get(item))
            {
                target = child.clone();
            }
            if !target.is_empty() && target != *module {
                targets.insert(target);
            }
        }
    }
    strongly_connected(&edges)
}

/// Every (file, imported module, rule) that breaks the table in `src/`, binaries excepted.
fn violations(src: &Path) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (path, module, names) in imports(src) {
        for imported in names {
            if let Some(rule) = broken(&module, &imported) {
                let file = path.strip_prefix(src.parent().unwrap()).unwrap();
                found.push((file.display().to_string(), imported, rule));
            }
        }
    }
    found
}

// Proves every `crate::` import in src/ keeps to the layer table, except the listed ones, and
// that the list holds no import that is gone. A failure names the file, the import and the
// rule it breaks.
#[test]
fn imports_keep_to_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = violations(&src);
    let known: BTreeSet<&str> = KNOWN.iter().copied().collect();
    let mut new = Vec::new();
    let mut seen = BTreeSet::new();
    for (file, imported, rule) in &found {
        let key = format!("{file} -> {imported}");
        if !known.contains(key.as_str()) {
            new.push(format!("{file}: `crate::{imported}` breaks: {rule}"));
        }
        seen.insert(key);
    }
    let gone: Vec<&str> = known
        .iter()
        .copied()
        .filter(|k| !seen.contains(*k))
        .collect();
    assert!(
        new.is_empty(),
        "imports that break the layer table:\n{}",
        new.join("\n")
    );
    assert!(
        gone.is_empty(),
        "listed as known but no longer imported (remove them from KNOWN):\n{}",
        gone.join("\n")
    );
}

// Proves no top-level modules name each other in a circle, except the listed circles, and
// that the list holds no circle that is gone.
#[test]
fn no_modules_name_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = circles(&src);
    let known: Vec<String> = KNOWN_CIRCLES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        found, known,
        "top-level modules naming each other in a circle (left: now, right: KNOWN_CIRCLES)"
    );
}

// Proves no two files of src/ name each other in a circle, directly or through others (a
// name reached through a mod.rs re-export counts for the file that defines it), except the
// listed circles, and that the list holds no circle that is gone.
#[test]
fn no_files_name_each_other_in_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = file_circles(&src);
    let known: Vec<String> = KNOWN_FILE_CIRCLES.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        found, known,
        "files naming each other in a circle (left: now, right: KNOWN_FILE_CIRCLES)"
    );
}

// Proves the store's writes are reached only where the design says: outside `storage`, only
// the files of STORE_WRITERS name `storage::StoreWrite` (the store's write methods are private
// to `storage` without it), and each of them still does.
#[test]
fn only_the_listed_files_write_the_store() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let mut writers = BTreeSet::new();
    for path in paths {
        let module = module_of(&path, &src);
        if within(&module, "storage") {
            continue;
        }
        let code = std::fs::read_to_string(&path).expect("read source");
        // A glob import of `storage` brings the trait in too.
        let glob = code.contains("crate::storage::*");
        let writes = glob
            || crate_full_paths(&code).iter().any(|segments| {
                segments.first().is_some_and(|s| s == "storage")
                    && segments
                        .get(1)
                        .is_some_and(|s| s == "StoreWrite" || s == "write")
            });
        if writes {
            let file = path.strip_prefix(src.parent().unwrap()).unwrap();
            writers.insert(file.display().to_string());
        }
    }
    let listed: BTreeSet<String> = STORE_WRITERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        writers, listed,
        "files naming storage::StoreWrite (left) and STORE_WRITERS (right)"
    );
}

// Proves the checker itself: a planted downward-breaking import in a scratch tree is named
// with its file, import and rule, and a clean tree passes.
#[test]
fn a_planted_wrong_import_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("storage")).unwrap();
    std::fs::write(src.join("limits.rs"), "pub const A: u8 = 1;\n").unwrap();
    std::fs::write(
        src.join("storage/mod.rs"),
        "use crate::limits::A;\n// use crate::node::NodeShared; (a comment)\n",
    )
    .unwrap();
    assert!(violations(&src).is_empty());
    std::fs::write(
        src.join("storage/store.rs"),
        "use crate::{limits::A, node::NodeShared};\nfn f() { crate::testing::x(); }\n",
    )
    .unwrap();
    let found = violations(&src);
    assert_eq!(
        found,
        vec![
            (
                "src/storage/store.rs".to_string(),
                "node".to_string(),
                "layer 2 (storage::store) names layer 6 (node)".to_string()
            ),
            (
                "src/storage/store.rs".to_string(),
                "testing".to_string(),
                "only tests, benches and fuzz/ may name testing".to_string()
            ),
        ]
    );
}

// Proves the file circle check: two files naming each other (one through its parent's
// `pub use` re-export) are found as a circle, and breaking one side clears it.
#[test]
fn a_planted_file_circle_is_found() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("storage")).unwrap();
    std::fs::write(
        src.join("storage/mod.rs"),
        "pub mod reads;\npub mod store;\npub use store::{Store, open};\n",
    )
    .unwrap();
    std::fs::write(
        src.join("storage/reads.rs"),
        "use crate::storage::Store;\npub struct View;\n",
    )
    .unwrap();
    std::fs::write(
        src.join("storage/store.rs"),
        "pub struct Store;\npub fn open() {}\n",
    )
    .unwrap();
    assert!(file_circles(&src).is_empty());
    std::fs::write(
        src.join("storage/store.rs"),
        "use crate::storage::reads::View;\npub struct Store;\npub fn open() {}\n",
    )
    .unwrap();
    assert_eq!(
        file_circles(&src),
        vec!["storage::reads, storage::store".to_string()]
    );
}

/// Files whose `Result<_, String>` is a command's final message to its user (printed, never
/// matched on): the CLI and the local-cluster command.
const STRING_ERRORS_ALLOWED: &[&str] = &["cli", "bin", "local_cluster", "bench"];

// Proves the library's errors are types, not strings: outside the commands listed above, no
// file of src/ has a function returning `Result<_, String>` (an error enum per operation
// family names what went wrong in a form callers can match). A failure names the file and line.
#[test]
fn library_errors_are_not_strings() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    let mut found = Vec::new();
    for path in paths {
        let module = module_of(&path, &src);
        if STRING_ERRORS_ALLOWED
            .iter()
            .any(|allowed| within(&module, allowed))
        {
            continue;
        }
        let code = std::fs::read_to_string(&path).expect("read source");
        for (n, line) in code.lines().enumerate() {
            let line = line.trim();
            if line.starts_with("//") {
                continue;
            }
            if line.contains("Result<") && line.contains(", String>") {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "library functions returning Result<_, String>:\n{}",
        found.join("\n")
    );
}
