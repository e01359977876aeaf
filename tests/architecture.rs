//! The architecture's invariants, checked on the real dependency graph (`cargo metadata`), as
//! rust-analyzer's `tidy` does: a change that breaks one fails here with the offending edge
//! named (`adapter-avaya-r11 → correlation`), not in review.
//!
//! - The pure crates (the contract, the core, correlation, the kit) have no async runtime or
//!   socket crate anywhere in their normal dependency tree.
//! - No adapter depends on another adapter, nor on `correlation`, `outbox` or `forwarder`:
//!   adapters speak only `listener-core`'s language, and the daemon wires them.
//! - `anyhow` is for binaries: only `pbx-listener` and `pbx-sim` use it.

#![allow(clippy::unwrap_used)] // A test of the build itself: failing loudly is the point.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Crates that must stay free of IO runtimes.
const PURE: &[&str] = &["generic-event", "listener-core", "correlation", "listener-kit"];

/// Crates whose presence in a tree means IO.
const RUNTIMES: &[&str] = &["tokio", "mio", "async-std", "hyper", "socket2"];

/// What an adapter may not depend on (besides other adapters).
const NOT_FOR_ADAPTERS: &[&str] = &["correlation", "outbox", "forwarder"];

/// The binaries, the only users of `anyhow`.
const BINARIES: &[&str] = &["pbx-listener", "pbx-sim"];

/// The workspace's dependency graph: package name → names of its normal (non-dev, non-build)
/// dependencies, for every package in the resolved graph.
struct Graph {
    workspace: BTreeSet<String>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

impl Graph {
    fn load() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["metadata", "--format-version", "1", "--offline", "--locked"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
        let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let name_of: BTreeMap<String, String> = meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["id"].as_str().unwrap().to_owned(), p["name"].as_str().unwrap().to_owned()))
            .collect();
        let workspace = meta["workspace_members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|id| name_of[id.as_str().unwrap()].clone())
            .collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for node in meta["resolve"]["nodes"].as_array().unwrap() {
            let from = name_of[node["id"].as_str().unwrap()].clone();
            let deps = edges.entry(from).or_default();
            for dep in node["deps"].as_array().unwrap() {
                let normal = dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null());
                if normal {
                    deps.insert(name_of[dep["pkg"].as_str().unwrap()].clone());
                }
            }
        }
        Graph { workspace, edges }
    }

    fn direct(&self, package: &str) -> &BTreeSet<String> {
        self.edges.get(package).unwrap_or_else(|| panic!("{package} is not in the dependency graph"))
    }

    /// Every crate `package` depends on, with the path that reaches it.
    fn tree(&self, package: &str) -> BTreeMap<String, Vec<String>> {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut stack = vec![vec![package.to_owned()]];
        while let Some(path) = stack.pop() {
            let last = path.last().unwrap();
            for dep in self.edges.get(last).into_iter().flatten() {
                if !seen.contains_key(dep) {
                    let mut longer = path.clone();
                    longer.push(dep.clone());
                    seen.insert(dep.clone(), longer.clone());
                    stack.push(longer);
                }
            }
        }
        seen
    }

    fn adapters(&self) -> Vec<&String> {
        self.workspace.iter().filter(|p| p.starts_with("adapter-")).collect()
    }
}

/// Every broken rule, as `a → b (why)`.
fn violations(graph: &Graph) -> Vec<String> {
    let mut broken = Vec::new();
    for pure in PURE {
        for (dep, path) in graph.tree(pure) {
            if RUNTIMES.contains(&dep.as_str()) {
                broken.push(format!("{} (a pure crate reaches an IO runtime)", path.join(" → ")));
            }
        }
    }
    let adapters = graph.adapters();
    for adapter in &adapters {
        for dep in graph.direct(adapter) {
            if adapters.contains(&dep) || NOT_FOR_ADAPTERS.contains(&dep.as_str()) {
                broken.push(format!("{adapter} → {dep} (an adapter depends only on listener-core and the kit)"));
            }
        }
    }
    for member in &graph.workspace {
        if !BINARIES.contains(&member.as_str()) && graph.direct(member).contains("anyhow") {
            broken.push(format!("{member} → anyhow (libraries use thiserror; anyhow is for the binaries)"));
        }
    }
    broken
}

#[test]
fn the_dependency_graph_keeps_the_architecture() {
    let graph = Graph::load();
    assert!(!graph.adapters().is_empty(), "no adapter crate found: {:?}", graph.workspace);
    for pure in PURE {
        assert!(graph.workspace.contains(*pure), "{pure} is not a workspace member any more");
    }
    let broken = violations(&graph);
    assert!(broken.is_empty(), "the architecture is broken:\n{}", broken.join("\n"));
}

/// The check itself can fail: an illegal edge added to the real graph is reported by name.
#[test]
fn an_illegal_edge_is_named() {
    let mut graph = Graph::load();
    let adapter = graph.adapters()[0].clone();
    graph.edges.get_mut(&adapter).unwrap().insert("correlation".into());
    graph.edges.get_mut("listener-core").unwrap().insert("tokio".into());
    graph.edges.get_mut("generic-event").unwrap().insert("anyhow".into());
    let broken = violations(&graph);
    assert!(
        broken.contains(&format!("{adapter} → correlation (an adapter depends only on listener-core and the kit)")),
        "{broken:#?}"
    );
    assert!(broken.iter().any(|b| b.starts_with("listener-core → tokio (a pure crate")), "{broken:#?}");
    assert!(broken.iter().any(|b| b.starts_with("correlation → listener-core → tokio")), "{broken:#?}");
    assert!(
        broken.contains(&"generic-event → anyhow (libraries use thiserror; anyhow is for the binaries)".to_owned()),
        "{broken:#?}"
    );
}
