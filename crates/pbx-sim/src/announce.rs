//! Leg announcements as the platform makes them: signed Level 2 B-leg Generic Events, with the
//! leg's SIP Call-ID in `meta.sipCallId`, POSTed to pbx-listener's `[legs]` endpoint.
//!
//! Tests and the demo use [`b_leg_event`] and [`announce`]; `pbx-sim announce` does the same
//! by hand:
//!
//! ```text
//! pbx-sim announce --url http://127.0.0.1:9443/legs --secret-file legs.secret \
//!     --call-sid 7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f --parent-call-sid 2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b \
//!     --sip-call-id b1e9c2d4@cpaas.example.net --from 15557654321 --to 15551230100 --status ringing
//! ```
//!
//! It speaks plain HTTP/1.1 (one request per connection); an `https://` endpoint is tested with
//! leg-announce's own TLS tests instead.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use generic_event::{EventKind, GenericEvent, MediaType, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;
use webhook_signature::{SigningSecret, sign_header};

/// One B leg to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BLeg {
    /// The platform account.
    pub account_id: Uuid,
    /// Its name.
    pub account_name: String,
    /// The B leg.
    pub call_sid: Uuid,
    /// The A leg it belongs to.
    pub parent_call_sid: Uuid,
    /// The SIP Call-ID the platform put on the B leg's INVITE (`meta.sipCallId`).
    pub sip_call_id: Option<String>,
    /// The caller, E.164 digits without `+`.
    pub from: String,
    /// The number dialled into the PBX, E.164 digits without `+`.
    pub to: String,
    /// More tags for `meta`.
    pub meta: BTreeMap<String, String>,
}

/// The Level 2 event announcing `leg` in `status` (`trying`, `ringing`, `in-progress`,
/// `completed`, `failed`) at `timestamp_ms`.
pub fn b_leg_event(leg: &BLeg, status: Status, timestamp_ms: u64) -> GenericEvent {
    let mut meta = leg.meta.clone();
    if let Some(cid) = &leg.sip_call_id {
        meta.insert("sipCallId".to_owned(), cid.clone());
    }
    GenericEvent {
        account_id: leg.account_id,
        account_name: leg.account_name.clone(),
        parent_call_sid: Some(leg.parent_call_sid),
        call_sid: Some(leg.call_sid),
        child_sid: None,
        kind: MediaType::Voice,
        event: EventKind::Call,
        status,
        from: leg.from.clone(),
        to: leg.to.clone(),
        extension: None,
        meta,
        timestamp: timestamp_ms,
    }
}

/// POSTs `events` (one object, or an array when more than one) to `url`, signed with
/// `secrets` (Standard Webhooks), and returns the status and body of the answer.
pub async fn announce(url: &str, secrets: &[SigningSecret], events: &[GenericEvent]) -> anyhow::Result<(u16, String)> {
    let (host, path) = split_http_url(url)?;
    let body = match events {
        [one] => serde_json::to_vec(one)?,
        many => serde_json::to_vec(many)?,
    };
    let now = listener_kit::clock::now().0 / 1000;
    let id = format!("msg_{}", Uuid::new_v4().simple());
    let signature = sign_header(secrets, &id, now, &body);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         webhook-id: {id}\r\nwebhook-timestamp: {now}\r\nwebhook-signature: {signature}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let exchange = async {
        let mut stream = TcpStream::connect(&host).await.with_context(|| format!("cannot connect to {host}"))?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        let mut answer = Vec::new();
        stream.take(1 << 20).read_to_end(&mut answer).await?;
        anyhow::Ok(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(30), exchange).await.context("no answer within 30 s")??;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .context("the answer is not HTTP/1.1")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// `http://host:port/path` → (`host:port`, `/path`).
fn split_http_url(url: &str) -> anyhow::Result<(String, String)> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// URLs are supported by the simulator");
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        bail!("{url}: no host");
    }
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
    Ok((host, path.to_owned()))
}

/// Command-line arguments of `pbx-sim announce`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The listener's leg announcement URL (`[legs] listen`), e.g. `http://127.0.0.1:9443/legs`.
    #[arg(long)]
    pub url: String,
    /// A `whsec_` secret to sign with (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// A file holding a `whsec_` secret (repeatable).
    #[arg(long = "secret-file")]
    pub secret_files: Vec<PathBuf>,
    /// The B leg's callSid (default: a new random one).
    #[arg(long)]
    pub call_sid: Option<Uuid>,
    /// The A leg's sid (default: a new random one).
    #[arg(long)]
    pub parent_call_sid: Option<Uuid>,
    /// The B leg's SIP Call-ID, sent as `meta.sipCallId`.
    #[arg(long)]
    pub sip_call_id: Option<String>,
    /// The caller (E.164 digits without `+`).
    #[arg(long, default_value = "441234567890")]
    pub from: String,
    /// The number dialled into the PBX (E.164 digits without `+`).
    #[arg(long, default_value = "441234567891")]
    pub to: String,
    /// The leg's status: trying, ringing, in-progress, completed or failed.
    #[arg(long, default_value = "ringing")]
    pub status: String,
    /// The account id.
    #[arg(long, default_value = "9539ee93-64c8-802b-360b-c6f2f7cf2507")]
    pub account_id: Uuid,
    /// The account name.
    #[arg(long, default_value = "Test Account")]
    pub account_name: String,
    /// A tag for `meta`, `key=value` (repeatable).
    #[arg(long = "meta")]
    pub meta: Vec<String>,
}

/// Runs `pbx-sim announce`: one signed announcement; fails unless the answer is 2xx.
pub async fn run_cli(args: Args) -> anyhow::Result<()> {
    let secrets = crate::secrets_from_args(&args.secrets, &args.secret_files)?;
    if secrets.is_empty() {
        bail!("give --secret or --secret-file: the listener refuses unsigned announcements");
    }
    let status =
        Status::parse(&args.status).filter(|s| Status::allowed_for(EventKind::Call).contains(s)).with_context(
            || format!("--status {}: expected trying, ringing, in-progress, completed or failed", args.status),
        )?;
    let mut meta = BTreeMap::new();
    for kv in &args.meta {
        let (k, v) = kv.split_once('=').with_context(|| format!("--meta {kv}: expected key=value"))?;
        meta.insert(k.to_owned(), v.to_owned());
    }
    let leg = BLeg {
        account_id: args.account_id,
        account_name: args.account_name,
        call_sid: args.call_sid.unwrap_or_else(Uuid::new_v4),
        parent_call_sid: args.parent_call_sid.unwrap_or_else(Uuid::new_v4),
        sip_call_id: args.sip_call_id,
        from: args.from,
        to: args.to,
        meta,
    };
    let now_ms = listener_kit::clock::now().0;
    let event = b_leg_event(&leg, status, now_ms);
    let (code, body) = announce(&args.url, &secrets, std::slice::from_ref(&event)).await?;
    println!("{code} {body}");
    if !(200..300).contains(&code) {
        bail!("the listener answered {code}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::platform::{Platform, PlatformConfig, Script, SignatureCheck};

    fn leg() -> BLeg {
        BLeg {
            account_id: "9539ee93-64c8-802b-360b-c6f2f7cf2507".parse().unwrap(),
            account_name: "Test Account".into(),
            call_sid: "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f".parse().unwrap(),
            parent_call_sid: "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b".parse().unwrap(),
            sip_call_id: Some("b1e9c2d4@cpaas.example.net".into()),
            from: "15557654321".into(),
            to: "15551230100".into(),
            meta: BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]),
        }
    }

    #[test]
    fn events_keep_the_contract() {
        let e = b_leg_event(&leg(), Status::Ringing, 1_700_000_000_000);
        let back = generic_event::validate_json(&e.to_json_bytes()).unwrap();
        assert_eq!(back.level(), generic_event::Level::BLeg);
        assert_eq!(back.meta["sipCallId"], "b1e9c2d4@cpaas.example.net");
        assert_eq!(back.meta["campaign"], "spring");
    }

    #[test]
    fn urls() {
        assert_eq!(split_http_url("http://127.0.0.1:9443/legs").unwrap(), ("127.0.0.1:9443".into(), "/legs".into()));
        assert_eq!(split_http_url("http://example.com").unwrap(), ("example.com:80".into(), "/".into()));
        assert!(split_http_url("https://x/legs").unwrap_err().to_string().contains("only http://"));
    }

    #[tokio::test]
    async fn announcements_are_signed_and_delivered() {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let config = PlatformConfig {
            secrets: vec![secret.clone()],
            script: Script::always_ok(),
            record_to: None,
            tolerance_secs: 300,
        };
        let platform = Platform::start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
        let url = format!("http://{}/legs", platform.addr());
        let events = [b_leg_event(&leg(), Status::Ringing, 1), b_leg_event(&leg(), Status::InProgress, 2)];
        let (status, _) = announce(&url, std::slice::from_ref(&secret), &events[..1]).await.unwrap();
        assert_eq!(status, 200);
        announce(&url, &[secret], &events).await.unwrap();
        let got = platform.deliveries();
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|d| d.signature == SignatureCheck::Valid && d.path == "/legs"));
        let one: GenericEvent = serde_json::from_slice(&got[0].body).unwrap();
        assert_eq!(one, events[0]);
        let two: Vec<GenericEvent> = serde_json::from_slice(&got[1].body).unwrap();
        assert_eq!(two, events);
        platform.stop().await;
    }
}
