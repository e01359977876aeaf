//! The binary's command line: `demo`, `check-config`, `--version`, completions.

mod support;

use std::time::Duration;

use generic_event::{Level, validate_json};
use support::{cmd, root, run_bounded};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn demo_prints_valid_level3_events_and_exits_after_count() {
    let out = run_bounded(cmd().args(["demo", "--count", "20"]), LIMIT);
    assert!(out.status.success(), "exit {}; stderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 20, "{stdout}");
    for line in lines {
        let event = validate_json(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(event.level(), Level::Pbx);
    }
}

#[test]
fn check_config_accepts_the_example() {
    let example = root().join("deploy/pbx-listener.toml");
    let out = run_bounded(cmd().arg("check-config").arg(&example), LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": OK"), "{stdout}");
}

#[test]
fn check_config_names_the_line_and_key_of_a_misspelt_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("deploy/pbx-listener.toml")).unwrap();
    let bad = text.replace("when_full = ", "when_ful = ");
    let line = bad.lines().position(|l| l.starts_with("when_ful")).unwrap() + 1;
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, bad).unwrap();
    let out = run_bounded(cmd().arg("check-config").arg(&path), LIMIT);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("bad.toml:{line}:1")), "{stderr}");
    assert!(stderr.contains("unknown field `when_ful`"), "{stderr}");
}

#[test]
fn check_config_of_a_missing_file_is_a_clear_error() {
    let out = run_bounded(cmd().args(["check-config", "/nonexistent/pbx-listener.toml"]), LIMIT);
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/pbx-listener.toml: cannot read the configuration file"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn version_and_completions() {
    let out = run_bounded(cmd().arg("--version"), LIMIT);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pbx-listener {}", env!("CARGO_PKG_VERSION")));
    let out = run_bounded(cmd().args(["completions", "bash"]), LIMIT);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("check-config"));
}
