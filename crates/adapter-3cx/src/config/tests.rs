//! Configuration: defaults, every error by key, the CDR table.

use std::io::Write;

use super::*;

/// A secret file removed when the test ends.
struct SecretFile(PathBuf);

impl SecretFile {
    fn new(text: &str) -> SecretFile {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("threecx-config-{}-{n}.secret", std::process::id()));
        std::fs::File::create(&path).unwrap().write_all(text.as_bytes()).unwrap();
        SecretFile(path)
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn parse(extra: &str, secret: &SecretFile) -> Config {
    let text = format!(
        "url = \"https://pbx.example.com:5001/\"\nclient_id = \"pbxlistener\"\nclient_secret_file = {:?}\nextensions = [\"101\", \"102\"]\n{extra}",
        secret.0
    );
    toml::from_str(&text).unwrap()
}

fn errors(c: &Config) -> Vec<String> {
    match c.load() {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

#[test]
fn defaults() {
    let secret = SecretFile::new("s3cr3t\n");
    let loaded = parse("", &secret).load().unwrap();
    assert_eq!(loaded.url.as_str(), "https://pbx.example.com:5001/");
    assert_eq!(loaded.client_secret.expose(), "s3cr3t");
    assert_eq!(loaded.keepalive, Duration::from_secs(15));
    assert_eq!(loaded.dead_link, Duration::from_secs(45));
    assert_eq!(loaded.removal_grace_ms, 1_500);
    assert_eq!(loaded.expires_in_unit, ExpiresInUnit::Auto);
    assert!(loaded.cdr.is_none());
    assert!(!format!("{loaded:?}").contains("s3cr3t"), "the secret is never printed");
}

#[test]
fn every_problem_by_key() {
    let secret = SecretFile::new("");
    let mut c = parse("", &secret);
    c.url = "ftp://x".into();
    c.client_id = String::new();
    c.extensions = vec!["101".into(), "101".into(), "a b".into()];
    c.park_orbits = vec!["101".into()];
    c.keepalive_secs = 0;
    c.dead_link_secs = 1;
    c.reconnect_min_ms = 60_000;
    c.reconnect_max_secs = 1;
    c.ca_file = Some("/nonexistent/ca.pem".into());
    let e = errors(&c);
    for want in [
        "url: must be http:// or https://",
        "client_id: must not be empty",
        "client_secret_file:",
        "extensions: \"101\" is listed twice",
        "extensions: \"a b\" is not a DN",
        "park_orbits: \"101\" is also listed in extensions",
        "keepalive_secs: must be between 1 and 600 seconds",
        "dead_link_secs: must be between 2 and 3600 seconds",
        "reconnect_min_ms: must be at most reconnect_max_secs",
        "ca_file: cannot read /nonexistent/ca.pem",
    ] {
        assert!(e.iter().any(|x| x.starts_with(want)), "missing {want:?} in {e:#?}");
    }
    let mut c = parse("", &SecretFile::new("x"));
    c.extensions.clear();
    assert!(errors(&c).iter().any(|e| e.starts_with("extensions: must list")), "{:?}", errors(&c));
}

#[test]
fn ranges_are_enforced_with_units() {
    let secret = SecretFile::new("x");
    for (key, min, max, unit, _) in RANGES {
        let text = format!("{key} = {}", max + 1);
        let c = parse(&text, &secret);
        let e = errors(&c);
        assert!(
            e.iter().any(|x| x.starts_with(&format!("{key}: must be between {min} and {max} {unit}"))),
            "{key}: {e:?}"
        );
    }
}

#[test]
fn cdr_table() {
    let secret = SecretFile::new("x");
    let c = parse(
        "[cdr]\nlisten = \"127.0.0.1:5040\"\ntime_zone = \"Europe/Berlin\"\nfields = [\"time-start\", \"from-no\", \"custom\"]\n",
        &secret,
    );
    let loaded = c.load().unwrap();
    let cdr = loaded.cdr.unwrap();
    assert_eq!(cdr.mode, CdrMode::Listen("127.0.0.1:5040".parse().unwrap()));
    assert_eq!(cdr.order.len(), 3);
    assert_eq!(cdr.order.unknown_names(), ["custom"]);
    let c = parse("[cdr]\nconnect = \"pbx.example.com:5040\"\n", &secret);
    assert_eq!(c.load().unwrap().cdr.unwrap().mode, CdrMode::Connect("pbx.example.com".into(), 5040));
    for (table, want) in [
        ("[cdr]\n", "cdr.listen: set listen"),
        ("[cdr]\nlisten = \"x\"\n", "cdr.listen: \"x\" is not an address:port"),
        ("[cdr]\nlisten = \"0.0.0.0:1\"\nconnect = \"a:1\"\n", "cdr.listen: set either"),
        ("[cdr]\nconnect = \"pbx\"\n", "cdr.connect: \"pbx\" is not host:port"),
        ("[cdr]\nconnect = \"pbx:0\"\n", "cdr.connect: \"pbx:0\": the port"),
        ("[cdr]\nconnect = \"pbx:1\"\nallowed_peers = [\"10.0.0.1\"]\n", "cdr.allowed_peers: is only used with listen"),
        ("[cdr]\nlisten = \"0.0.0.0:1\"\nfields = [\"from-no\"]\n", "cdr.fields: must include time-start"),
        (
            "[cdr]\nlisten = \"0.0.0.0:1\"\ntime_zone = \"Mars/Olympus\"\n",
            "cdr.time_zone: \"Mars/Olympus\" is not a known IANA time zone",
        ),
        (
            "[cdr]\nlisten = \"0.0.0.0:1\"\nmax_line_bytes = 1\n",
            "cdr.max_line_bytes: must be between 256 and 1048576 bytes",
        ),
    ] {
        let e = errors(&parse(table, &secret));
        assert!(e.iter().any(|x| x.starts_with(want)), "missing {want:?} in {e:#?}");
    }
    assert!(
        toml::from_str::<Config>(
            "url = \"x\"\nclient_id = \"a\"\nclient_secret_file = \"s\"\nextensions = []\nbogus = 1"
        )
        .is_err()
    );
}

#[test]
fn utc_and_named_zones_load() {
    assert!(load_time_zone("UTC").is_ok());
    assert!(load_time_zone("utc").is_ok());
    assert!(load_time_zone("Europe/London").is_ok());
    assert!(load_time_zone("Nowhere/Land").is_err());
}
