//! The platform simulator announces legs to the real endpoint: what `pbx-sim announce` sends
//! is what the listener accepts, and the leg updates carry the Call-ID and tags.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use correlation::LegUpdate;
use generic_event::Status;
use leg_announce::{LegAnnounceServer, LegsConfig};
use pbx_sim::announce::{BLeg, announce, b_leg_event};
use tokio::sync::{mpsc, oneshot};
use webhook_signature::SigningSecret;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test]
async fn simulator_announcements_become_leg_updates() {
    let dir = std::env::temp_dir().join(format!("leg-announce-sim-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("legs.secret"), SECRET).unwrap();
    let config = LegsConfig {
        max_body_bytes: 65_536,
        ..LegsConfig::new("127.0.0.1:0".parse().unwrap(), vec![dir.join("legs.secret")])
    };
    let server = LegAnnounceServer::bind(&config).await.unwrap();
    let url = format!("http://{}/legs", server.local_addr().unwrap());
    let (tx, mut rx) = mpsc::channel(16);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(tx, async move {
        let _ = stopped.await;
    }));

    let leg = BLeg {
        account_id: "9539ee93-64c8-802b-360b-c6f2f7cf2507".parse().unwrap(),
        account_name: "Test Account".into(),
        call_sid: "7c1f0d2e-9a4b-4c3d-8e5f-6a7b8c9d0e1f".parse().unwrap(),
        parent_call_sid: "2a3b4c5d-6e7f-4809-9a1b-2c3d4e5f6a7b".parse().unwrap(),
        sip_call_id: Some("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d".into()),
        from: "15557654321".into(),
        to: "15551230100".into(),
        meta: BTreeMap::from([("campaign".to_owned(), "spring".to_owned())]),
    };
    let secret = SigningSecret::parse(SECRET).unwrap();
    let events = [b_leg_event(&leg, Status::Ringing, 1_000), b_leg_event(&leg, Status::Completed, 9_000)];
    let (status, body) = announce(&url, std::slice::from_ref(&secret), &events).await.unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"legs":2}"#));
    let first = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.unwrap().unwrap();
    let LegUpdate::Learned(f) = &first else { panic!("{first:?}") };
    assert_eq!(f.sip_call_id.as_deref(), Some("b1e9c2d4-5f60-4a7b-8c9d-0e1f2a3b4c5d"));
    assert_eq!(f.call_sid, Some(leg.call_sid));
    assert_eq!(f.tags, leg.meta);
    assert!(matches!(rx.recv().await.unwrap(), LegUpdate::Ended(_)));
    // Signed with another secret: refused.
    let other = SigningSecret::from_bytes(vec![7; 32]);
    assert_eq!(announce(&url, &[other], &events[..1]).await.unwrap().0, 401);

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
