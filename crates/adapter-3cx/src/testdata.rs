//! The real samples in `testdata/samples/3cx/`, for tests, benchmarks and the simulator.
//!
//! Public so that the benchmark, the fuzz seeds and the simulator's tests read the same bytes;
//! not part of the adapter's API.

macro_rules! sample {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/3cx/", $name))
    };
}

/// `callcontrol_participant_v20_ringing_inbound.json`: a V20 participant body (capture).
pub const PARTICIPANT_RINGING: &str = sample!("callcontrol_participant_v20_ringing_inbound.json");
/// `callcontrol_ws_debuglog_qmex.jsonl`: a bridge's log line wrapping a body and a frame's numbers.
pub const WS_DEBUGLOG: &str = sample!("callcontrol_ws_debuglog_qmex.jsonl");
/// `callcontrol_ws_event_envelope_upsert.json`: one WebSocket event frame.
pub const WS_UPSERT: &str = sample!("callcontrol_ws_event_envelope_upsert.json");
/// `callcontrol_ws_request_frame.json`: a client→PBX request frame.
pub const WS_REQUEST: &str = sample!("callcontrol_ws_request_frame.json");
/// `cdr_socket_27fields_dorel14.txt`: one CDR line, 27 legacy fields, default order.
pub const CDR_LINE: &str = sample!("cdr_socket_27fields_dorel14.txt");
/// `cdr_v16_record_converted_to_json.json`: a V16 record re-keyed to JSON by an integrator.
pub const CDR_V16_JSON: &str = sample!("cdr_v16_record_converted_to_json.json");
/// `v16_mgmt_api_activecalls_response.json`: the V16/V18 console's active calls.
pub const V16_ACTIVE_CALLS: &str = sample!("v16_mgmt_api_activecalls_response.json");
/// `competitor_creomate_bundle_webhooks.jsonl`: a competitor's webhook bodies (vendor sample).
pub const CREOMATE_BUNDLE: &str = sample!("competitor_creomate_bundle_webhooks.jsonl");
/// `competitor_creomate_webhook_generator_get.txt`: a competitor's GET query strings.
pub const CREOMATE_GET: &str = sample!("competitor_creomate_webhook_generator_get.txt");
/// `competitor_k2m_webhooks.jsonl`: another competitor's webhook bodies.
pub const K2M: &str = sample!("competitor_k2m_webhooks.jsonl");

/// Workloads shared by the benchmark (`benches/decode.rs`) and `examples/throughput.rs`.
#[allow(clippy::unwrap_used, missing_docs)] // A benchmark unwraps its own fixtures.
pub mod workload {
    use listener_core::{AdapterEvent, PbxId, PbxType, UnixMillis};

    use crate::cdr::FieldOrder;
    use crate::participant::Participant;
    use crate::tracker::{CdrOutcome, CdrSettings, Fetched, Output, Tracker, TrackerSettings};
    use crate::ws::{EventType, parse_frame, participant_path, render_frame};

    /// Calls per round.
    pub const CALLS: usize = 1_000;

    /// Per call: the Upsert frame and GET body of a ringing leg, of the same leg connected, and
    /// the Remove frame (the sample body with the call's ids).
    pub struct ParticipantInput {
        pub frame: String,
        pub ringing: Vec<u8>,
        pub connected: Vec<u8>,
        pub remove: String,
    }

    pub fn participant_inputs() -> Vec<ParticipantInput> {
        let sample = super::PARTICIPANT_RINGING;
        (0..CALLS)
            .map(|i| {
                let id = 10_000 + i;
                let body = sample.replace("8106", &id.to_string()).replace("1264", &(50_000 + i).to_string());
                let connected = body.replace("\"Ringing\"", "\"Connected\"");
                let path = participant_path("150", &id.to_string());
                ParticipantInput {
                    frame: render_frame(i as i64, EventType::Upsert, &path),
                    ringing: body.into_bytes(),
                    connected: connected.into_bytes(),
                    remove: render_frame(0, EventType::Remove, &path),
                }
            })
            .collect()
    }

    /// Drains the tracker; returns the signals (each passed through `sink`).
    pub fn drain(t: &mut Tracker, sink: &mut impl FnMut(&AdapterEvent)) -> usize {
        let mut signals = 0;
        loop {
            match t.poll_output() {
                Output::Event(e) => {
                    sink(&e);
                    if let AdapterEvent::Signal(_) = e {
                        signals += 1;
                    }
                }
                Output::Timeout(_) => return signals,
                _ => {}
            }
        }
    }

    /// A live tracker with nothing known.
    pub fn participant_tracker() -> Tracker {
        let mut t = Tracker::new(PbxId::new("bench", PbxType::new("3cx")), TrackerSettings::default());
        t.handle_connected(UnixMillis(0));
        t.handle_snapshot(UnixMillis(0), Vec::new());
        drain(&mut t, &mut |_| {});
        t
    }

    /// Every call through the tracker: frame and body of each of its two bodies parsed from
    /// text, the Remove frame parsed, the removal decided after its grace. Returns the signals
    /// (4 per call).
    #[inline(never)] // A symbol of its own, for `callgrind --toggle-collect`.
    pub fn run_participants(
        t: &mut Tracker,
        inputs: &[ParticipantInput],
        sink: &mut impl FnMut(&AdapterEvent),
    ) -> usize {
        let mut now = UnixMillis(1_000);
        let mut signals = 0;
        for input in inputs {
            for body in [&input.ringing, &input.connected] {
                let event = parse_frame(&input.frame, 65_536).unwrap();
                t.handle_ws_event(now, event);
                let p = Participant::from_json(body).unwrap();
                let id = p.id.unwrap().to_string();
                t.handle_fetched(now, "150", &id, Fetched::Found(p));
                signals += drain(t, sink);
            }
            t.handle_ws_event(now, parse_frame(&input.remove, 65_536).unwrap());
            now = now.plus_ms(2_000);
            t.handle_timeout(now);
            signals += drain(t, sink);
        }
        signals
    }

    /// The CDR line sample with each record its own call and extension (one extension's calls
    /// at the same time would be one call to the merge).
    pub fn cdr_lines() -> Vec<String> {
        let sample = super::CDR_LINE.trim_end();
        (0..CALLS)
            .map(|i| {
                sample
                    .replacen("Call 288831", &format!("Call {}", 300_000 + i), 1)
                    .replace("_26808", &format!("_{}", 40_000 + i))
                    .replace("10016", &format!("{}", 20_000 + i))
            })
            .collect()
    }

    /// A tracker with the CDR feed and every record young enough to be reconstructed.
    pub fn cdr_tracker() -> Tracker {
        let mut settings = CdrSettings::new(FieldOrder::default(), jiff::tz::TimeZone::UTC);
        settings.backfill_max_age_ms = u64::MAX / 4;
        Tracker::new(
            PbxId::new("bench", PbxType::new("3cx")),
            TrackerSettings { cdr: Some(settings), ..TrackerSettings::default() },
        )
    }

    /// When the CDR lines arrive.
    pub const CDR_NOW: UnixMillis = UnixMillis(1_718_604_000_000);

    /// Every line through the tracker; returns the signals (3 per line when reconstructed).
    #[inline(never)] // A symbol of its own, for `callgrind --toggle-collect`.
    pub fn run_cdr(t: &mut Tracker, lines: &[String], sink: &mut impl FnMut(&AdapterEvent)) -> usize {
        let mut signals = 0;
        for line in lines {
            std::hint::black_box(t.handle_cdr_line(CDR_NOW, line));
            signals += drain(t, sink);
        }
        signals
    }

    /// The decoder alone: every body of `inputs` read into a [`Participant`]. Returns the
    /// bodies read.
    #[inline(never)] // A symbol of its own, for `callgrind --toggle-collect`.
    pub fn run_body_parse(inputs: &[ParticipantInput]) -> usize {
        let mut n = 0;
        for input in inputs {
            for body in [&input.ringing, &input.connected] {
                std::hint::black_box(Participant::from_json(body).unwrap());
                n += 1;
            }
        }
        n
    }

    /// The decoder alone: every line read into a [`crate::cdr::CdrRecord`] (default field
    /// order). Returns the lines read.
    #[inline(never)] // A symbol of its own, for `callgrind --toggle-collect`.
    pub fn run_cdr_parse(lines: &[String]) -> usize {
        let order = FieldOrder::default();
        let mut n = 0;
        for line in lines {
            std::hint::black_box(crate::cdr::parse_record(line, &order).unwrap());
            n += 1;
        }
        n
    }

    /// A CDR tracker whose live feed saw each call of [`cdr_lines`] (first sight = the
    /// record's start) and saw it end.
    pub fn merged_tracker() -> Tracker {
        let mut t = cdr_tracker();
        let start = UnixMillis(1_718_603_989_000);
        t.handle_connected(start);
        t.handle_snapshot(start, Vec::new());
        for i in 0..CALLS {
            let ext = (20_000 + i).to_string();
            let body = super::PARTICIPANT_RINGING
                .replace("\"150\"", &format!("\"{ext}\""))
                .replace("1264", &(40_000 + i).to_string())
                .replace("\"Ringing\"", "\"Connected\"");
            let p = Participant::from_json(body.as_bytes()).unwrap();
            let path = participant_path(&ext, "8106");
            t.handle_ws_event(start, parse_frame(&render_frame(0, EventType::Upsert, &path), 65_536).unwrap());
            t.handle_fetched(start, &ext, "8106", Fetched::Found(p));
            t.handle_ws_event(start, parse_frame(&render_frame(0, EventType::Remove, &path), 65_536).unwrap());
        }
        t.handle_timeout(start.plus_ms(10_000));
        drain(&mut t, &mut |_| {});
        t
    }

    /// Every line through a [`merged_tracker`]; returns how many were merged into their call.
    #[inline(never)] // A symbol of its own, for `callgrind --toggle-collect`.
    pub fn run_merged(t: &mut Tracker, lines: &[String], sink: &mut impl FnMut(&AdapterEvent)) -> usize {
        let mut merged = 0;
        for line in lines {
            if let CdrOutcome::Merged { .. } = t.handle_cdr_line(CDR_NOW, line) {
                merged += 1;
            }
            drain(t, sink);
        }
        merged
    }
}
