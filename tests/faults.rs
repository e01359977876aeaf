//! Issue 13: the whole daemon under faults, each a bounded run of `pbx_sim::load` (the real
//! binary, a DevLink3 simulator and the platform receiver on loopback) that ends in the
//! conservation check: every event the outbox accepted reached the platform byte-identical,
//! each call's events in order, every device's last event `disconnected`, nothing dropped,
//! pending or quarantined, and a clean exit on SIGTERM.
//!
//! These are the short variants CI runs (a few seconds of calls each). The long ones are the
//! same runs with longer windows, by command (docs/PERFORMANCE.md, "Faults"), e.g.
//! `pbx-sim load --calls-per-sec 200 --duration-secs 600 --platform-down 60:300`.
//!
//! Nothing here asserts a duration: the runs are bounded by their stages and their limits.

mod support;

use pbx_sim::load::{Args, Report};

/// A small steady load: 20 calls/s, each ringing, answered and hung up over 2 s.
fn args() -> Args {
    support::short_load(20.0, 8)
}

fn run(args: &Args) -> Report {
    support::run_load(args)
}

#[test]
fn platform_down_then_back_loses_nothing() {
    let mut a = args();
    a.platform_down = Some((2, 4));
    let report = run(&a);
    assert!(report.faults.iter().any(|f| f.contains("platform back")), "{:?}", report.faults);
}

#[test]
fn retry_after_on_429_and_503_is_honoured_and_loses_nothing() {
    let mut a = args();
    a.platform_script = Some("429*2:retry-after=1,503*2:retry-after=1".into());
    a.platform_script_at = 2;
    let report = run(&a);
    let refused = &report.conservation.refused;
    assert_eq!((refused.get(&429), refused.get(&503)), (Some(&2), Some(&2)), "{refused:?}");
}

#[test]
fn a_platform_that_never_answers_times_out_and_loses_nothing() {
    let mut a = args();
    // Lines before a section header go into [platform].
    a.config_extra = "timeout_secs = 1\n".into();
    a.platform_script = Some("200*3:delay-ms=600000".into());
    a.platform_script_at = 2;
    run(&a);
}

#[test]
fn a_flapping_pbx_link_is_reconciled_and_loses_nothing() {
    let mut a = args();
    a.flap_every_secs = Some(2);
    let report = run(&a);
    assert!(report.faults.iter().filter(|f| f.contains("PBX link dropped")).count() >= 2, "{:?}", report.faults);
}

#[test]
fn kill_dash_nine_during_load_loses_nothing_accepted() {
    let mut a = args();
    a.kill_at = vec![3, 5];
    let report = run(&a);
    assert_eq!(report.faults.iter().filter(|f| f.contains("kill -9")).count(), 2, "{:?}", report.faults);
}

/// The data directory on a 48 MiB tmpfs (we are root in CI and here; a test that cannot mount
/// fails, it does not skip), filled to the last byte for a while: the daemon stops accepting
/// with the gauge set, keeps the PBX link, and accepts again when space returns.
#[test]
fn a_full_data_disk_stops_accepting_keeps_the_link_and_resumes() {
    let mount = tempfile::tempdir().expect("mount point");
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(mount.path())
        .status()
        .expect("running mount");
    assert!(status.success(), "mounting a tmpfs needs root (CI and the dev machines run as root)");
    struct Unmount<'a>(&'a std::path::Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount.path());
    let mut a = args();
    // Enough writing that the WAL must grow while the disk is full.
    a.calls_per_sec = 200.0;
    a.duration_secs = 14;
    a.data_dir = Some(mount.path().join("state"));
    a.max_bytes = 16 << 20;
    a.disk_full = Some((2, 8));
    let report = run(&a);
    let back = report.faults.iter().find(|f| f.contains("space back")).expect("the space came back");
    assert!(back.contains("reported the full disk: true"), "{back}");
    assert!(back.contains("PBX link up throughout: true"), "{back}");
}
