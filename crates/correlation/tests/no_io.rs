//! *Architecture invariant:* `correlation` does no IO — no tokio (or any async runtime or
//! socket crate) anywhere in its normal dependency tree.

#![allow(clippy::unwrap_used)]

use std::process::Command;

#[test]
fn no_async_runtime_in_the_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "correlation", "-e", "normal", "--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.lines().any(|l| l.starts_with("listener-core ")), "unexpected tree:\n{tree}");
    for forbidden in ["tokio ", "mio ", "async-std ", "hyper ", "socket2 "] {
        assert!(!tree.lines().any(|l| l.starts_with(forbidden)), "{forbidden}is in correlation's tree:\n{tree}");
    }
}
