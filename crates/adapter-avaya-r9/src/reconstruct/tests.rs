//! Reconstruction by data: Avaya's documented calls, each timeline as golden text with times
//! relative to Call Start.

use super::*;
use crate::smdr::{line_text, parse};
use crate::testdata::{SMDR_DOC_EXAMPLES, truncated_examples_dated};

fn segments(text: &str) -> Vec<Segment<'static>> {
    text.lines().map(|l| Segment::from(&parse(&line_text(l.as_bytes())).unwrap())).collect()
}

/// Renders a timeline: `+<seconds> <extension> <change>[ reason][ (guessed)]`, then the end.
fn render(t: &Timeline<'_>) -> String {
    let mut out = String::new();
    for s in &t.steps {
        let change = match &s.change {
            CallChange::Ringing => "ringing".to_owned(),
            CallChange::Connected => "connected".to_owned(),
            CallChange::Held => "held".to_owned(),
            CallChange::Resumed => "resumed".to_owned(),
            CallChange::Parked { .. } => "parked".to_owned(),
            CallChange::Unparked { .. } => "unparked".to_owned(),
            CallChange::Transferred { to } => format!("transferred to {}", to.as_deref().unwrap_or("?")),
            CallChange::Disconnected { reason } => format!("disconnected {}", reason.as_str()),
            CallChange::Queued { .. } => "queued".to_owned(),
            CallChange::Ended => "ended".to_owned(),
        };
        let guessed = if s.time_reconstructed { " (guessed)" } else { "" };
        let cause = s.targeting_cause.map(|c| format!(" [{c}]")).unwrap_or_default();
        out.push_str(&format!("+{} {} {change}{guessed}{cause}\n", s.at.0 / 1000, s.extension));
    }
    out.push_str(&format!("+{} end\n", t.ended_at.0 / 1000));
    out
}

/// What a test looks at after the golden comparison (the timeline borrows the segments).
struct Checked {
    info: CallInfo,
}

fn check(text: &str, complete: bool, want: &str) -> Checked {
    let segments = segments(text);
    let t = reconstruct(&segments, UnixMillis(0), complete);
    let want: String = want.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| format!("{l}\n")).collect();
    assert_eq!(render(&t), want, "\n--- got ---\n{}", render(&t));
    Checked { info: t.info }
}

fn doc_line(n: usize) -> String {
    String::from_utf8_lossy(SMDR_DOC_EXAMPLES).lines().nth(n - 1).unwrap().to_owned()
}

fn doc_lines(a: usize, b: usize) -> String {
    (a..=b).map(doc_line).collect::<Vec<_>>().join("\n")
}

#[test]
fn lost_inbound_call() {
    let t = check(&doc_line(1), true, "+0 4324 ringing\n+9 4324 disconnected caller-abandoned\n+9 end");
    assert_eq!(t.info.direction, Direction::Inbound);
    assert_eq!(t.info.external_number.as_deref(), Some("8004206"));
    assert_eq!(t.info.dialled_number.as_deref(), Some("4324"));
}

#[test]
fn internal_call_to_voicemail_rings_the_called_extension_first() {
    let t = check(
        &doc_line(2),
        true,
        "+0 11 ringing
         +21 11 disconnected voicemail
         +21 15 connected
         +31 15 disconnected normal
         +31 end",
    );
    assert_eq!(t.info.direction, Direction::Internal);
}

#[test]
fn answered_held_and_transferred_to_voicemail() {
    check(
        &doc_lines(3, 4),
        true,
        "+0 4750 ringing
         +7 4750 connected
         +20 4750 held (guessed)
         +31 4750 transferred to voicemail
         +52 end",
    );
}

#[test]
fn inbound_answered_with_a_ddi() {
    let t = check(&doc_line(5), true, "+0 23 ringing\n+7 23 connected\n+12 23 disconnected normal\n+12 end");
    assert_eq!(t.info.dialled_number.as_deref(), Some("390664"), "the DDI received");
}

#[test]
fn internal_call_both_extensions() {
    check(
        &doc_line(6),
        true,
        "+0 4207 ringing
         +4 4207 connected
         +4 4688 connected
         +48 4688 disconnected normal
         +48 4207 disconnected normal
         +48 end",
    );
}

#[test]
fn pickup_by_another_extension() {
    check(
        &doc_lines(7, 8),
        true,
        "+0 2124 ringing
         +8 2124 disconnected answered-elsewhere
         +8 2121 ringing
         +9 2121 connected
         +9 2122 connected
         +47 2122 disconnected normal
         +47 2121 disconnected normal
         +47 end",
    );
}

#[test]
fn park_and_unpark() {
    check(
        &doc_lines(10, 11),
        true,
        "+0 203 ringing
         +2 203 connected
         +2 207 connected
         +2 203 parked
         +6 201 unparked
         +8 207 disconnected normal
         +8 201 disconnected normal
         +8 end",
    );
}

#[test]
fn outbound_call_transferred_with_targeting_causes() {
    let dated = String::from_utf8(truncated_examples_dated()).unwrap();
    let lines: Vec<&str> = dated.lines().collect();
    let t = check(
        &format!("{}\n{}", lines[0], lines[2]),
        true,
        "+3 203 connected
         +8 203 transferred to 207 [U XfP]
         +8 207 connected
         +12 207 disconnected normal [U Xfd]
         +12 end",
    );
    assert_eq!(t.info.direction, Direction::Outbound);
    assert_eq!(t.info.dialled_number.as_deref(), Some("9416"));
}

#[test]
fn a_hold_in_a_call_that_goes_on_is_placed_mid_call() {
    let line = "2024/01/01 10:00:00,00:00:40,5,01707392200,I,299999,299999,,0,9,0,E4750,J,T9002,L,10,0";
    check(
        line,
        true,
        "+0 4750 ringing
         +5 4750 connected
         +25 4750 held (guessed)
         +35 4750 resumed (guessed)
         +55 4750 disconnected normal
         +55 end",
    );
}

#[test]
fn a_call_cut_short_by_the_timeout_ends_unknown() {
    check(
        &doc_line(3),
        false,
        "+0 4750 ringing
         +7 4750 connected
         +20 4750 held (guessed)
         +31 4750 disconnected unknown
         +31 end",
    );
}

#[test]
fn a_hunt_group_that_rang_out_then_went_to_voicemail() {
    let text = "2024/01/01 10:00:00,00:00:00,15,0123,I,200,200,,0,9,1,E4001,A,T9001,L,0,0
2024/01/01 10:00:00,00:00:00,10,0123,I,200,200,,0,9,1,E4002,B,T9001,L,0,0
2024/01/01 10:00:00,00:00:30,0,0123,I,200,200,,0,9,0,V9501,VM Channel 1,T9001,L,0,0";
    check(
        text,
        true,
        "+0 4001 ringing
         +15 4001 disconnected voicemail
         +15 4002 ringing
         +25 4002 disconnected voicemail
         +55 end",
    );
}
