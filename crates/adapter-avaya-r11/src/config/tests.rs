use std::io::Write;

use super::*;

const CA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../pbx-sim/testdata/tls/ca.pem");

/// A password file in a temporary directory that lives as long as the test.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!("avaya-r11-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(contents.as_bytes()).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn parse(extra: &str, password_file: &Path) -> Result<Config, toml::de::Error> {
    toml::from_str(&format!(
        "host = \"192.0.2.10\"\nusername = \"pbxlistener\"\npassword_file = {:?}\n{extra}",
        password_file.display().to_string()
    ))
}

#[test]
fn defaults() {
    let pw = TempFile::new("defaults", "s3cret\n");
    let config = parse("", &pw.0).unwrap();
    assert_eq!(config, Config::new("192.0.2.10", "pbxlistener", pw.0.clone()));
    let loaded = config.load().unwrap();
    assert_eq!(loaded.port, 50797);
    assert!(loaded.tls.is_none());
    assert_eq!(loaded.password.expose(), "s3cret", "the trailing newline is not part of it");
    assert_eq!(loaded.flags, "-SIPTrack -CMExtn");
    assert_eq!(loaded.keepalive, Duration::from_secs(30));
    assert_eq!(loaded.dead_link, Duration::from_secs(75));
    assert_eq!(loaded.resync_settle_ms, 2_000);
    assert_eq!(loaded.max_frame_bytes, 262_144);
    assert_eq!(loaded.auth_failure_backoff, Duration::from_secs(300));
    assert!(loaded.application_name.starts_with("pbx-listener "));
}

#[test]
fn the_password_is_never_printed() {
    let pw = TempFile::new("debug", "hunter2");
    let loaded = parse("", &pw.0).unwrap().load().unwrap();
    let debug = format!("{loaded:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("Secret([redacted])"));
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let pw = TempFile::new("unknown", "x");
    let err = parse("keepalive = 5", &pw.0).unwrap_err().to_string();
    assert!(err.contains("unknown field `keepalive`"), "{err}");
    assert!(err.contains("line 4"), "{err}");
}

#[test]
fn tls_uses_its_port_and_needs_a_ca_file() {
    let pw = TempFile::new("tls", "x");
    let err = parse("tls = true", &pw.0).unwrap().load().unwrap_err().to_string();
    assert_eq!(err, "ca_file: is required when tls = true (the PBX's certificate is self-signed)");
    let loaded = parse(&format!("tls = true\nca_file = {CA:?}"), &pw.0).unwrap().load().unwrap();
    assert_eq!(loaded.port, 50796);
    let tls = loaded.tls.unwrap();
    assert_eq!(format!("{:?}", tls.server_name), "IpAddress(V4(Ipv4Addr([192, 0, 2, 10])))");
    let loaded = parse(&format!("tls = true\nca_file = {CA:?}\ntls_server_name = \"ipo.example\"\nport = 9000"), &pw.0)
        .unwrap()
        .load()
        .unwrap();
    assert_eq!(loaded.port, 9000);
    assert_eq!(format!("{:?}", loaded.tls.unwrap().server_name), "DnsName(\"ipo.example\")");
}

#[test]
fn errors_name_the_key_and_the_path() {
    let missing = PathBuf::from("/nonexistent/avaya.password");
    let err = Config::new("h", "u", &missing).load().unwrap_err().to_string();
    assert!(err.starts_with("password_file: cannot read /nonexistent/avaya.password: "), "{err}");

    let empty = TempFile::new("empty", "\n");
    let err = Config::new("h", "u", &empty.0).load().unwrap_err().to_string();
    assert!(err.starts_with("password_file: ") && err.contains("is empty"), "{err}");

    let pw = TempFile::new("errors", "x");
    let not_pem = TempFile::new("notpem", "hello");
    let cases: Vec<(String, &str)> = vec![
        ("flags = [\"-CD2\"]".into(), "flags: -CD2 switches the stream to Delta2, which this adapter does not read"),
        ("flags = [\"SIPTrack\"]".into(), "flags: \"SIPTrack\" is not a DevLink3 flag (e.g. \"-SIPTrack\")"),
        ("keepalive_secs = 80".into(), "dead_link_secs: must be more than keepalive_secs (80 seconds)"),
        ("max_frame_bytes = 10".into(), "max_frame_bytes: must be between 1024 and 4194303 bytes"),
        (format!("ca_file = {CA:?}"), "ca_file: is only used with tls = true"),
        ("username = \"\"".into(), "username: must not be empty"),
        (format!("tls = true\nca_file = {:?}", not_pem.0.display().to_string()), "holds no PEM certificate"),
    ];
    for (extra, want) in cases {
        let toml = if extra.starts_with("username") {
            format!("host = \"h\"\npassword_file = {:?}\n{extra}", pw.0.display().to_string())
        } else {
            format!("host = \"h\"\nusername = \"u\"\npassword_file = {:?}\n{extra}", pw.0.display().to_string())
        };
        let config: Config = toml::from_str(&toml).unwrap_or_else(|e| panic!("{extra}: {e}"));
        let err = config.load().unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
}

/// Issue 9, item 1: `auth_failure_backoff_secs = 0` made the daemon try to log in every few ms
/// with a wrong password, which locks the IP Office account. Every numeric key has a minimum and
/// a maximum, with units, and every problem is reported at once.
#[test]
fn numeric_keys_have_bounds_with_units() {
    let pw = TempFile::new("bounds", "x");
    let load = |extra: &str| {
        let toml = format!("host = \"h\"\nusername = \"u\"\npassword_file = {:?}\n{extra}", pw.0.display().to_string());
        toml::from_str::<Config>(&toml).unwrap().load()
    };
    let err = load("auth_failure_backoff_secs = 0").unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert_eq!(err.0[0].key, "auth_failure_backoff_secs");
    assert!(err.0[0].message.starts_with("must be between 60 and 86400 seconds (the IP Office counts failed logins"));
    for (extra, key, range) in [
        ("keepalive_secs = 0", "keepalive_secs", "between 1 and 600 seconds"),
        ("reconnect_min_ms = 0", "reconnect_min_ms", "between 100 and 60000 ms"),
        ("reconnect_max_secs = 0", "reconnect_max_secs", "between 1 and 3600 seconds"),
        ("connect_timeout_secs = 0", "connect_timeout_secs", "between 1 and 300 seconds"),
        ("resync_settle_ms = 600000", "resync_settle_ms", "between 0 and 60000 ms"),
        ("vanish_grace_ms = 600000", "vanish_grace_ms", "between 0 and 60000 ms"),
        ("dead_link_secs = 100000", "dead_link_secs", "between 2 and 3600 seconds"),
        ("port = 0", "port", "between 1 and 65535"),
    ] {
        let err = load(extra).unwrap_err();
        let e = err.0.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("{extra}: {err}"));
        assert!(e.message.contains(range), "{extra}: {}", e.message);
    }
    // `reconnect_max_secs = 0` is reported against itself (it was placed on reconnect_min_ms).
    let err = load("reconnect_max_secs = 0").unwrap_err();
    assert!(err.0.iter().any(|e| e.key == "reconnect_max_secs"), "{err}");
    // Several problems: all of them.
    let err = load("keepalive_secs = 0\nauth_failure_backoff_secs = 5\nflags = [\"-CD2\"]").unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["flags", "keepalive_secs", "auth_failure_backoff_secs"]);
    assert!(load("auth_failure_backoff_secs = 60").is_ok());
}

/// How the daemon embeds the block: the daemon owns `type` and `name` and hands the remaining
/// keys to `Config`, whose `deny_unknown_fields` then rejects typos. This test pins the recipe
/// (a `toml::Table` minus the two keys, then `Config::deserialize`) and shows why serde's
/// `flatten` is not enough: with `flatten`, unknown keys are silently ignored.
#[test]
fn embedding_in_the_daemons_pbx_block() {
    use serde::Deserialize;

    let pw = TempFile::new("embed", "x");
    let block = format!(
        "type = \"avaya-r11\"\nname = \"london\"\nhost = \"h\"\nusername = \"u\"\npassword_file = {:?}\nkeepalive = 5\n",
        pw.0.display().to_string()
    );

    // The recipe: take the table, remove what the daemon owns, deserialize the rest.
    let mut table: toml::Table = toml::from_str(&block).unwrap();
    assert_eq!(table.remove("type").and_then(|v| v.as_str().map(str::to_owned)).as_deref(), Some("avaya-r11"));
    assert_eq!(table.remove("name").and_then(|v| v.as_str().map(str::to_owned)).as_deref(), Some("london"));
    let err = Config::deserialize(toml::Value::Table(table)).unwrap_err().to_string();
    assert!(err.contains("unknown field `keepalive`"), "{err}");

    // The trap: an internally tagged enum with a flattened Config accepts the typo.
    #[derive(Deserialize)]
    #[serde(tag = "type")]
    enum Pbx {
        #[serde(rename = "avaya-r11")]
        AvayaR11 {
            #[allow(dead_code)]
            name: String,
            #[serde(flatten)]
            config: Config,
        },
    }
    let Pbx::AvayaR11 { config, .. } = toml::from_str::<Pbx>(&block).unwrap();
    assert_eq!(config.keepalive_secs, 30, "flatten silently dropped `keepalive`");
}
