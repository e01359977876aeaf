//! The `[platform]` table: what is accepted, what is refused and how the refusal reads.
#![allow(clippy::unwrap_used)]

use forwarder::{ConfigError, ForwarderConfig};
use webhook_signature::SigningSecret;

fn secret_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("secret");
    std::fs::write(&path, SigningSecret::from_bytes(vec![3; 32]).to_whsec()).unwrap();
    path
}

#[test]
fn parses_toml_with_defaults_and_rejects_unknown_keys() {
    let config: ForwarderConfig = toml::from_str(
        "url = \"https://events.example.com/l3\"\nsigning_secret_files = [\"/run/credentials/x/secret\"]\n",
    )
    .unwrap();
    assert_eq!(config.timeout_secs, 15);
    assert_eq!(config.max_concurrency, 64);
    assert_eq!(config.backoff_max_secs, 60);
    let err = toml::from_str::<ForwarderConfig>("url = \"https://x\"\nsigning_secret_files = []\ntimeout_sec = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `timeout_sec`"), "{err}");
}

#[test]
fn loads_secrets_and_never_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let mut config = ForwarderConfig::new("https://events.example.com/l3", vec![secret_file(dir.path())]);
    config.bearer_token_file = Some(token);
    let settings = config.load().unwrap();
    assert_eq!(settings.secrets.len(), 1);
    assert_eq!(settings.bearer.as_ref().unwrap().header_value(), "Bearer s3cr3t-token");
    let shown = format!("{settings:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
    assert!(!shown.contains(&SigningSecret::from_bytes(vec![3; 32]).to_whsec()), "{shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn refusals_name_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = secret_file(dir.path());
    let load = |f: &dyn Fn(&mut ForwarderConfig)| {
        let mut c = ForwarderConfig::new("https://events.example.com/l3", vec![good.clone()]);
        f(&mut c);
        c.load().unwrap_err()
    };
    let e = load(&|c| c.url = "http://events.example.com/l3".into());
    assert!(matches!(e, ConfigError::InsecureUrl { .. }), "{e}");
    assert_eq!(e.key(), Some("url"));
    assert!(e.to_string().starts_with("\"http://events.example.com/l3\" must be https://"), "{e}");
    let e = load(&|c| c.url = "not a url".into());
    assert!(matches!(e, ConfigError::BadUrl { .. }), "{e}");
    let e = load(&|c| c.signing_secret_files = vec![]);
    assert!(matches!(e, ConfigError::SecretCount(0)), "{e}");
    let e = load(&|c| c.signing_secret_files = vec![good.clone(), good.clone(), good.clone()]);
    assert!(matches!(e, ConfigError::SecretCount(3)), "{e}");
    let missing = dir.path().join("missing");
    let e = load(&|c| c.signing_secret_files = vec![missing.clone()]);
    assert!(matches!(&e, ConfigError::ReadFile { key: "signing_secret_files", path, .. } if *path == missing), "{e}");
    assert!(e.to_string().contains("missing"));
    let bad = dir.path().join("bad");
    std::fs::write(&bad, "whsec_short").unwrap();
    let e = load(&|c| c.signing_secret_files = vec![bad.clone()]);
    assert!(matches!(e, ConfigError::BadSecret { .. }), "{e}");
    let e = load(&|c| c.bearer_token_file = Some(dir.path().join("nope")));
    assert!(matches!(e, ConfigError::ReadFile { key: "bearer_token_file", .. }), "{e}");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = load(&|c| c.bearer_token_file = Some(empty.clone()));
    assert!(matches!(e, ConfigError::BadToken { .. }), "{e}");
    let e = load(&|c| c.ca_file = Some(good.clone()));
    assert!(matches!(e, ConfigError::BadCaFile { .. }), "{e}");
    let e = load(&|c| c.max_concurrency = 0);
    assert!(matches!(e, ConfigError::OutOfRange { key: "max_concurrency", .. }), "{e}");
    let e = load(&|c| c.timeout_secs = 0);
    assert!(matches!(e, ConfigError::OutOfRange { key: "timeout_secs", .. }), "{e}");
    assert_eq!(e.to_string(), "0 is out of range: must be between 1 and 600 seconds", "the range with its unit");
    let e = load(&|c| c.backoff_initial_ms = 0);
    assert_eq!(e.to_string(), "0 is out of range: must be between 1 and 600000 ms");
}

#[test]
fn plain_http_is_allowed_to_loopback_only() {
    let dir = tempfile::tempdir().unwrap();
    for url in ["http://127.0.0.1:8080/e", "http://[::1]:8080/e", "http://localhost/e"] {
        assert!(ForwarderConfig::new(url, vec![secret_file(dir.path())]).load().is_ok(), "{url}");
    }
}
