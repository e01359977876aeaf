//! Issue 13: `pbx-sim load` drives the real daemon over each PBX type's real sockets — the IP
//! Office R9's SMDR (and a DevLink relay's Delta2), 3CX's Call Control API (WebSocket
//! notifications and participant GETs) — as it does DevLink3 in `tests/faults.rs`.
//!
//! Each test is one short bounded run (10 calls/s, each 2 s long, for 6 s) that ends in the
//! conservation check (every event the outbox accepted reached the platform byte-identical,
//! each call's events in order, every device's last event `disconnected`, nothing dropped,
//! pending or quarantined, a clean exit on SIGTERM), and checks that the ledger attributed the
//! events to the calls' phases by their `meta.pbxCallId`: a driver that named the wrong ids
//! would leave them unattributed.
//!
//! Nothing here asserts a duration: the runs are bounded by their stages and their limits.

mod support;

use pbx_sim::load::{self, Args, Report};

fn args(pbx: &str, scenario: &str) -> Args {
    let mut args = support::short_load(10.0, 6);
    args.pbx = pbx.into();
    args.scenario = Some(scenario.into());
    args
}

fn run(args: &Args) -> Report {
    let report = support::run_load(args);
    assert!(report.conservation.delivered_distinct > 0, "nothing delivered:\n{}", report.text());
    let latency = report.latency.unwrap_or_else(|| panic!("no event attributed in the window:\n{}", report.text()));
    assert!(latency.samples > 0);
    assert_eq!(report.unattributed, 0, "events the ledger could not attribute:\n{}", report.text());
    report
}

#[test]
fn avaya_r9_smdr_calls_are_delivered_and_attributed_to_the_record() {
    let report = run(&args("avaya-r9", "answered"));
    // Over SMDR alone every event comes from a record written when the call ended.
    assert_eq!(report.after_the_fact, report.conservation.delivered_distinct, "{}", report.text());
}

#[test]
fn avaya_r9_delta2_calls_are_delivered_live_and_attributed() {
    let report = run(&args("avaya-r9", "hunt-group+delta2"));
    // Delta2 ends every call before its SMDR record comes: nothing is added after the fact.
    assert_eq!(report.after_the_fact, 0, "{}", report.text());
}

#[test]
fn threecx_calls_are_delivered_and_attributed() {
    let report = run(&args("3cx", "queue"));
    assert_eq!(report.after_the_fact, 0, "{}", report.text());
}

#[test]
fn an_unknown_scenario_is_refused_by_name() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    for (pbx, scenario, wanted) in [
        ("avaya-r9", "queue", "unknown avaya-r9 scenario \"queue\""),
        ("3cx", "hunt-group", "unknown 3cx scenario \"hunt-group\""),
    ] {
        let err = rt.block_on(load::run(&args(pbx, scenario))).expect_err("refused");
        assert!(format!("{err:#}").contains(wanted), "{err:#}");
    }
}
