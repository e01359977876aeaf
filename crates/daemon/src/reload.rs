//! What a configuration reload changes: a pure comparison of the running [`Config`] with the
//! new one ([`plan`]), so that `run` restarts only what changed and refuses what it cannot
//! change in place.
//!
//! In place: each `[[pbx]]` block (only the links whose block, or a secret it names, changed
//! are restarted; blocks added or removed start or stop their link), `[platform]` (the
//! forwarder takes the new settings between requests), `[correlation]`, `[numbers]`,
//! `[account]` and `[meta]` (the pipeline's cores take them and keep what they know), `[legs]`
//! and `[sip_tap]` (their listeners are restarted), `[log] level`. Not in place: `[outbox]` (the
//! outbox stays open under the queued events) and `[admin]` (its socket): a reload that changes
//! them is refused with "needs a restart", and the daemon runs on. `[log] format` applies at the
//! next restart.

use std::fmt;

use crate::config::Config;

/// What a reload does, section by section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// PBX links to stop: blocks removed, and blocks changed (started again from `pbx_start`).
    pub pbx_stop: Vec<String>,
    /// PBX links to start: blocks added, and blocks changed.
    pub pbx_start: Vec<String>,
    /// PBX links that go on untouched.
    pub pbx_unchanged: Vec<String>,
    /// New `[platform]` settings for the forwarder.
    pub platform: bool,
    /// New settings for the pipeline's cores: `[correlation]`, `[numbers]`, `[account]`,
    /// `[meta]`, or a leg source added or removed (correlation waits only where a leg can come).
    pub cores: bool,
    /// Restart the leg announcement endpoint (or start or stop it).
    pub legs: bool,
    /// Restart the SIP tap (or start or stop it).
    pub sip_tap: bool,
    /// A new log filter.
    pub log_level: bool,
    /// What the reload cannot apply but does not refuse, for the log.
    pub notes: Vec<String>,
}

impl ReloadPlan {
    /// Whether the new file changes nothing that runs.
    pub fn is_empty(&self) -> bool {
        self.pbx_stop.is_empty()
            && self.pbx_start.is_empty()
            && !self.platform
            && !self.cores
            && !self.legs
            && !self.sip_tap
            && !self.log_level
    }
}

impl fmt::Display for ReloadPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("nothing changed");
        }
        let mut parts = Vec::new();
        let restarted: Vec<&String> = self.pbx_start.iter().filter(|p| self.pbx_stop.contains(p)).collect();
        let added: Vec<&String> = self.pbx_start.iter().filter(|p| !self.pbx_stop.contains(p)).collect();
        let removed: Vec<&String> = self.pbx_stop.iter().filter(|p| !self.pbx_start.contains(p)).collect();
        for (what, names) in [("restarted", restarted), ("added", added), ("removed", removed)] {
            if !names.is_empty() {
                let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                parts.push(format!("PBX {what}: {}", names.join(", ")));
            }
        }
        for (flag, what) in [
            (self.platform, "platform settings"),
            (self.cores, "correlation, numbers, account or meta"),
            (self.legs, "leg endpoint restarted"),
            (self.sip_tap, "SIP tap restarted"),
            (self.log_level, "log level"),
        ] {
            if flag {
                parts.push(what.to_owned());
            }
        }
        f.write_str(&parts.join("; "))
    }
}

/// Compares the running configuration with a new, valid one: what to do, or why the new one
/// needs a restart (each reason a sentence naming the section).
pub fn plan(old: &Config, new: &Config) -> Result<ReloadPlan, Vec<String>> {
    let (was, is) = (&old.fingerprints, &new.fingerprints);
    let mut refused = Vec::new();
    if was.section("outbox") != is.section("outbox") || old.outbox != new.outbox {
        refused.push(
            "[outbox] changed: the outbox stays open under the queued events while the daemon runs; \
             `systemctl restart pbx-listener` applies it (queued events and open calls survive a restart)"
                .to_owned(),
        );
    }
    if was.section("admin") != is.section("admin") || old.admin != new.admin {
        refused.push(
            "[admin] changed: its address is bound at start; `systemctl restart pbx-listener` applies it".to_owned(),
        );
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    let mut plan = ReloadPlan::default();
    for name in was.pbx.keys() {
        match is.pbx.get(name) {
            None => plan.pbx_stop.push(name.clone()),
            Some(print) if print != &was.pbx[name] => {
                plan.pbx_stop.push(name.clone());
                plan.pbx_start.push(name.clone());
            }
            Some(_) => plan.pbx_unchanged.push(name.clone()),
        }
    }
    plan.pbx_start.extend(is.pbx.keys().filter(|n| !was.pbx.contains_key(*n)).cloned());
    let changed = |section: &str| was.section(section) != is.section(section);
    plan.platform = changed("platform");
    plan.legs = changed("legs");
    plan.sip_tap = changed("sip_tap");
    let sources = |c: &Config| c.legs.is_some() || c.sip_tap.is_some();
    plan.cores = ["correlation", "numbers", "account", "meta"].into_iter().any(changed) || sources(old) != sources(new);
    if old.log.level != new.log.level {
        plan.log_level = true;
    }
    if old.log.format != new.log.format {
        plan.notes.push("[log] format applies at the next restart".to_owned());
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::load_str;

    const BASE: &str = include_str!("../../../deploy/pbx-listener.toml");

    fn config(text: &str) -> Config {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        load_str(&dir.join("reload-test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn second_pbx(text: &str, keepalive: u32) -> String {
        format!(
            "{text}\n[[pbx]]\nname = \"branch\"\ntype = \"avaya-r11\"\nhost = \"192.0.2.11\"\nusername = \"u\"\n\
             password_file = \"secrets/avaya-password\"\nkeepalive_secs = {keepalive}\n"
        )
    }

    #[test]
    fn only_the_changed_block_restarts() {
        let old = config(&second_pbx(BASE, 30));
        let new = config(&second_pbx(BASE, 20));
        let plan = plan(&old, &new).unwrap();
        assert_eq!(plan.pbx_stop, ["branch"]);
        assert_eq!(plan.pbx_start, ["branch"]);
        assert_eq!(plan.pbx_unchanged, ["hq"]);
        assert!(!plan.platform && !plan.cores && !plan.legs && !plan.sip_tap);
        assert_eq!(plan.to_string(), "PBX restarted: branch");
    }

    #[test]
    fn comments_and_layout_change_nothing() {
        let old = config(BASE);
        let new = config(&BASE.replace("# The platform account", "# Our account\n\n# The platform account"));
        let plan = plan(&old, &new).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(plan.pbx_unchanged, ["hq"]);
    }

    #[test]
    fn blocks_added_and_removed_and_sections_changed() {
        let old = config(BASE);
        let new = config(
            &second_pbx(BASE, 30)
                .replace("timeout_secs = 15", "timeout_secs = 20")
                .replace("number_window_ms = 2000", "number_window_ms = 1000")
                .replace("level = \"info\"", "level = \"debug\""),
        );
        let plan = plan(&old, &new).unwrap();
        assert_eq!((plan.pbx_start.as_slice(), plan.pbx_stop.as_slice()), (&["branch".to_owned()][..], &[][..]));
        assert!(plan.platform && plan.cores && plan.log_level && !plan.legs);
        let back = super::plan(&new, &old).unwrap();
        assert_eq!(back.pbx_stop, ["branch"]);
        assert!(back.pbx_start.is_empty());
    }

    #[test]
    fn the_outbox_and_the_admin_address_need_a_restart() {
        let old = config(BASE);
        let moved = config(&BASE.replace("data_dir = \"/var/lib/pbx-listener\"", "data_dir = \"/var/lib/elsewhere\""));
        let why = plan(&old, &moved).unwrap_err();
        assert!(why[0].starts_with("[outbox] changed") && why[0].contains("restart"), "{why:?}");
        let admin = config(&BASE.replace("listen = \"127.0.0.1:9187\"", "listen = \"127.0.0.1:9188\""));
        let why = plan(&old, &admin).unwrap_err();
        assert!(why[0].starts_with("[admin] changed"), "{why:?}");
    }
}
