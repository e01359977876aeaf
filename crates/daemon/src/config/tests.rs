use std::path::Path;

use super::*;

const EXAMPLE: &str = include_str!("../../../../deploy/pbx-listener.toml");

/// Loads `text` as if it were a file in `deploy/`, so the example's relative secret paths resolve.
fn load(text: &str) -> Result<Config, ConfigErrors> {
    load_str(&deploy_dir().join("test.toml"), text)
}

fn deploy_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// The errors as `line:col key message` strings.
fn errors(text: &str) -> Vec<String> {
    load(text)
        .unwrap_err()
        .0
        .into_iter()
        .map(|e| {
            let (l, c) = e.location.unwrap_or((0, 0));
            format!("{l}:{c} {} {}", e.key.unwrap_or_default(), e.message)
        })
        .collect()
}

#[test]
fn the_example_config_is_valid() {
    let config = load(EXAMPLE).unwrap();
    assert_eq!(config.account.name, "Example Ltd");
    assert_eq!(config.numbers.region(), "GB");
    assert_eq!(config.pbx.len(), 1);
    assert_eq!(&*config.pbx[0].id.name, "hq");
    assert_eq!(config.outbox.config.when_full, outbox::WhenFull::DropOldest);
    assert_eq!(config.admin.listen, Some("127.0.0.1:9187".parse().unwrap()));
}

#[test]
fn defaults_for_optional_sections() {
    let config = load(
        "[account]\nid = \"9539ee93-64c8-802b-360b-c6f2f7cf2507\"\nname = \"A\"\n[numbers]\ndefault_region = \"US\"\n\
         [platform]\nurl = \"https://p.example\"\nsigning_secret_files = [\"secrets/platform-signing-secret\"]\n",
    )
    .unwrap();
    assert_eq!(config.outbox.data_dir, Path::new("/var/lib/pbx-listener"));
    assert_eq!(config.outbox.config.max_bytes, 1 << 30);
    assert_eq!(config.numbers.region(), "US");
    assert!(config.pbx.is_empty());
    assert!(config.meta.is_empty());
}

#[test]
fn a_misspelt_key_names_its_line_and_key() {
    let text = EXAMPLE.replace("max_bytes = 1073741824", "max_byte = 1073741824");
    let line = text.lines().position(|l| l.starts_with("max_byte =")).unwrap() + 1;
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{line}:1 ")), "{errs:?}");
    assert!(errs[0].contains("unknown field `max_byte`"), "{errs:?}");
}

#[test]
fn a_misspelt_section_is_an_error() {
    let errs = errors(&EXAMPLE.replace("[admin]", "[admn]"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("unknown field `admn`"), "{errs:?}");
}

#[test]
fn bad_values_are_errors_with_lines() {
    let text = EXAMPLE.replace("id = \"9539ee93-64c8-802b-360b-c6f2f7cf2507\"", "id = \"not-a-uuid\"");
    let errs = errors(&text);
    assert!(errs[0].starts_with("13:"), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("when_full = \"drop_oldest\"", "when_full = \"block\""));
    assert!(errs[0].contains("unknown variant `block`"), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("default_region = \"GB\"", "default_region = \"UK\""));
    assert!(errs[0].contains("numbers.default_region") && errs[0].contains("\"UK\""), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("max_bytes = 1073741824", "max_bytes = 1000"));
    assert!(errs[0].contains("outbox.max_bytes"), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("level = \"info\"", "level = \"info,=[\""));
    assert!(errs[0].contains("log.level"), "{errs:?}");
}

#[test]
fn pbx_blocks_are_checked() {
    let errs = errors(&EXAMPLE.replace("type = \"avaya-r11\"", "type = \"nortel-meridian\""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("pbx[0].type") && errs[0].contains("unknown PBX type \"nortel-meridian\""), "{errs:?}");
    let two = format!("{EXAMPLE}\n[[pbx]]\nname = \"hq\"\ntype = \"avaya-r11\"\n");
    let errs = errors(&two);
    assert!(errs.iter().any(|e| e.contains("pbx[1].name") && e.contains("already named \"hq\"")), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("name = \"hq\"", "name = \"h q/1\""));
    assert!(errs[0].contains("pbx[0].name"), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("name = \"hq\"\n", ""));
    assert!(errs[0].contains("missing key `name`"), "{errs:?}");
}

#[test]
fn reserved_meta_keys_are_refused() {
    let errs = errors(&EXAMPLE.replace("site = \"london-hq\"", "site = \"x\"\ncorrelation = \"y\""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("meta.correlation"), "{errs:?}");
}

#[test]
fn syntax_errors_have_a_location() {
    let e = load("[account\nid = 1\n").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].location.map(|l| l.0), Some(1));
}

#[test]
fn every_error_is_reported_at_once() {
    let text = EXAMPLE
        .replace("default_region = \"GB\"", "default_region = \"ZZ\"")
        .replace("site = \"london-hq\"", "source = \"x\"");
    assert_eq!(errors(&text).len(), 2);
}

#[test]
fn relative_paths_are_relative_to_the_file() {
    let config = load(&EXAMPLE.replace("data_dir = \"/var/lib/pbx-listener\"", "data_dir = \"state\"")).unwrap();
    assert_eq!(config.outbox.data_dir, deploy_dir().join("state"));
}

#[test]
fn a_missing_secret_file_is_a_clear_error_with_its_line() {
    let text = EXAMPLE.replace("secrets/platform-signing-secret\"]", "secrets/missing\"]");
    let line = text.lines().position(|l| l.starts_with("signing_secret_files")).unwrap() + 1;
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{line}:1 platform.signing_secret_files cannot read ")), "{errs:?}");
    assert!(errs[0].contains("secrets/missing"), "{errs:?}");
}

#[test]
fn platform_errors_name_their_key() {
    let errs = errors(&EXAMPLE.replace("https://events.example.net/v1/pbx-events", "http://events.example.net/"));
    assert!(errs[0].contains("platform.url") && errs[0].contains("https://"), "{errs:?}");
    let text = EXAMPLE.replace("wait_for_leg_ms = 6000", "wait_for_leg_ms = 10");
    let line = text.lines().position(|l| l.starts_with("wait_for_leg_ms")).unwrap() + 1;
    let errs = errors(&text);
    assert!(errs[0].starts_with(&format!("{line}:1 correlation.wait_for_leg_ms must be")), "{errs:?}");
    let errs = errors(&EXAMPLE.replace("timeout_secs = 15", "timeout_secs = \"15\""));
    assert!(errs[0].contains("invalid type"), "{errs:?}");
}

#[test]
fn secrets_never_appear_in_the_summary() {
    let config = load(EXAMPLE).unwrap();
    let secret = std::fs::read_to_string(deploy_dir().join("secrets/platform-signing-secret")).unwrap();
    let summary = config.summary();
    assert!(!summary.contains(secret.trim()) && !summary.contains("whsec_"), "{summary}");
    assert!(!format!("{config:?}").contains(secret.trim().trim_start_matches("whsec_")));
}

/// The example's commented-out keys are real keys: uncommented (with secrets that exist here),
/// the file is still valid.
#[test]
fn the_examples_commented_keys_are_valid() {
    let uncommented: String = EXAMPLE
        .lines()
        .map(|l| match l.strip_prefix('#') {
            // Commented keys and tables, not the prose comments (which start with "# ").
            Some(rest) if rest.starts_with('[') || rest.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')) => {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/run/credentials/pbx-listener.service/legs-signing-secret", "secrets/platform-signing-secret")
        .replace("/run/credentials/pbx-listener.service/hep-key", "secrets/avaya-password")
        .replace("secrets/platform-token", "secrets/avaya-password")
        // A CA file only goes with `tls = true`, which needs a real certificate: left out here.
        .replace("ca_file = \"/etc/pbx-listener/ipoffice-ca.pem\"\n", "")
        .replace("tls_server_name = \"ipoffice.example.com\"\n", "")
        .replace("ca_file = \"/etc/pbx-listener/platform-ca.pem\"\n", "")
        .replace("ca_file = \"/etc/pbx-listener/3cx-ca.pem\"\n", "")
        .replace("tls_cert_file = \"/etc/pbx-listener/legs.crt\"\n", "")
        .replace("tls_key_file = \"/etc/pbx-listener/legs.key\"\n", "");
    assert!(uncommented.contains("\n[legs]\n") && uncommented.contains("\n[sip_tap]\n"), "{uncommented}");
    let config = load(&uncommented).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert!(config.legs.is_some() && config.sip_tap.is_some());
    assert!(
        config.correlation.config().call_id_pattern.is_some() && config.correlation.config().token_pattern.is_some()
    );
}

#[test]
fn legs_errors_come_from_the_endpoints_own_checks() {
    let text = format!(
        "{EXAMPLE}\n[legs]\nlisten = \"127.0.0.1:9443\"\nsigning_secret_files = [\"secrets/avaya-password\"]\n"
    );
    let line = text.lines().position(|l| l.starts_with("signing_secret_files = [\"secrets/avaya")).unwrap() + 1;
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{line}:1 legs.signing_secret_files ")), "{errs:?}");
    assert!(errs[0].contains("avaya-password") && errs[0].contains("base64"), "not a whsec_ secret: {errs:?}");
    let half = format!(
        "{EXAMPLE}\n[legs]\nlisten = \"127.0.0.1:9443\"\nsigning_secret_files = [\"secrets/platform-signing-secret\"]\ntls_key_file = \"secrets/avaya-password\"\n"
    );
    let errs = errors(&half);
    assert!(errs[0].contains(" legs.tls_cert_file is missing") && errs[0].contains("set both or neither"), "{errs:?}");
}

/// Issue 9 items 8 and 9: the endpoints' connection limits are range-checked by their own
/// config types, and `check-config` reports the line, the key, the range and the unit.
#[test]
fn connection_limits_out_of_range_name_line_key_and_range() {
    let text = format!(
        "{EXAMPLE}\n[legs]\nlisten = \"127.0.0.1:9443\"\nsigning_secret_files = [\"secrets/platform-signing-secret\"]\n\
         header_timeout_ms = 5\n\n[sip_tap]\nhep_tcp_listen = \"127.0.0.1:9060\"\nmax_tcp_connections_per_source = 100\n"
    );
    let at = |key: &str| text.lines().position(|l| l.starts_with(key)).unwrap() + 1;
    let errs = errors(&text);
    assert_eq!(
        errs,
        [
            format!(
                "{}:1 legs.header_timeout_ms must be between 100 and 120000 milliseconds, not 5",
                at("header_timeout_ms")
            ),
            format!(
                "{}:1 sip_tap.max_tcp_connections_per_source must be between 1 and 64 connections (at most max_tcp_connections), not 100",
                at("max_tcp_connections_per_source")
            ),
        ]
    );
}

#[test]
fn an_empty_hep_key_file_is_caught_by_check_config() {
    let text =
        format!("{EXAMPLE}\n[sip_tap]\nhep_udp_listen = \"127.0.0.1:9060\"\nhep_auth_key_file = \"/dev/null\"\n");
    let line = text.lines().position(|l| l.starts_with("hep_auth_key_file")).unwrap() + 1;
    let errs = errors(&text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with(&format!("{line}:1 sip_tap.hep_auth_key_file ")), "{errs:?}");
    assert!(errs[0].contains("the file is empty"), "{errs:?}");
}

/// The keys `deploy/pbx-listener.toml` writes or shows commented out, by section (`pbx:<type>`
/// for a `[[pbx]]` block of that type; dotted for its sub-tables).
fn documented_keys() -> std::collections::BTreeSet<(String, String)> {
    let mut out = std::collections::BTreeSet::new();
    let mut section = String::new();
    let mut sub = String::new();
    let mut pbx_keys: Vec<String> = Vec::new();
    let mut pbx_type: Option<String> = None;
    let mut flush = |pbx_type: &mut Option<String>, keys: &mut Vec<String>| {
        if let Some(t) = pbx_type.take() {
            for k in keys.drain(..) {
                out.insert((format!("pbx:{t}"), k));
            }
        }
        keys.clear();
    };
    let mut flat = Vec::new();
    for raw in EXAMPLE.lines() {
        let line = raw.trim_start_matches('#').trim();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]")) {
            flush(&mut pbx_type, &mut pbx_keys);
            section = name.to_owned();
            sub.clear();
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            match name.strip_prefix("pbx.") {
                Some(rest) if section == "pbx" => sub = format!("{rest}."),
                _ => {
                    flush(&mut pbx_type, &mut pbx_keys);
                    section = name.to_owned();
                    sub.clear();
                }
            }
        } else if let Some((key, value)) = line.split_once('=') {
            let key = key.trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()) {
                continue;
            }
            if section == "pbx" {
                if key == "type" && sub.is_empty() {
                    pbx_type = Some(value.trim().trim_matches('"').to_owned());
                } else {
                    pbx_keys.push(format!("{sub}{key}"));
                }
            } else {
                flat.push((section.clone(), key.to_owned()));
            }
        }
    }
    flush(&mut pbx_type, &mut pbx_keys);
    out.extend(flat);
    out
}

/// Issue 9, item 5: every key each section and each PBX type accepts is documented in the
/// example configuration (written, or commented out with its default), so the README's
/// promise holds for the next PBX types too.
#[test]
fn the_example_config_documents_every_key() {
    use listener_core::serde_fields;
    let documented = documented_keys();
    let mut expected: Vec<(String, String)> = Vec::new();
    let mut section = |name: &str, keys: Vec<String>| {
        expected.extend(keys.into_iter().map(|k| (name.to_owned(), k)));
    };
    section("account", serde_fields::<file::AccountSection>());
    section("numbers", serde_fields::<file::NumbersSection>());
    section("platform", serde_fields::<forwarder::ForwarderConfig>());
    section("correlation", serde_fields::<correlation::CorrelationConfig>());
    section("legs", serde_fields::<leg_announce::LegsConfig>());
    section("sip_tap", serde_fields::<sip_tap::SipTapConfig>());
    section("outbox", serde_fields::<outbox::OutboxSection>());
    section("admin", serde_fields::<file::AdminSection>());
    section("log", serde_fields::<file::LogSection>());
    for kind in crate::pbx_types::PBX_TYPES {
        section(&format!("pbx:{}", kind.pbx_type().as_str()), kind.config_keys());
    }
    assert!(expected.len() > 40, "the probe found the keys: {expected:?}");
    let missing: Vec<String> =
        expected.iter().filter(|k| !documented.contains(*k)).map(|(s, k)| format!("[{s}] {k}")).collect();
    assert!(missing.is_empty(), "deploy/pbx-listener.toml does not document: {missing:#?}");
}
