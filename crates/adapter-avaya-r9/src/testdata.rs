//! The real samples in `testdata/samples/avaya/`, for tests, benchmarks and the simulator.
//!
//! Public so that the benchmark, the fuzz seeds and the simulator's tests read the same bytes;
//! not part of the adapter's API.

/// `smdr_avaya_doc_examples.csv`: 11 records from Avaya's documentation, CR LF, with the
/// documented anomalies (an `I` in Is Internal, a trailing space, Call Starts without seconds,
/// 17- and 31-field records).
pub const SMDR_DOC_EXAMPLES: &[u8] =
    include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/avaya/smdr_avaya_doc_examples.csv"));

/// `smdr_avaya_doc_examples_truncated.txt`: 5 records with External Targeting Causes, whose
/// Call Start the source elides (`… 16:33:19`).
pub const SMDR_TRUNCATED_EXAMPLES: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/samples/avaya/smdr_avaya_doc_examples_truncated.txt"
));

/// The truncated examples with the elided date filled in (`2008/07/09`, the day of the
/// manual's neighbouring examples), so that they parse as records.
pub fn truncated_examples_dated() -> Vec<u8> {
    String::from_utf8_lossy(SMDR_TRUNCATED_EXAMPLES).replace("\u{2026} ", "2008/07/09 ").into_bytes()
}

/// Workloads shared by the benchmark and `examples/throughput.rs` (see `benches/decode.rs`).
pub mod workload {
    use bytes::BytesMut;
    use listener_core::{PbxId, PbxType, UnixMillis};
    use tokio_util::codec::Decoder;

    use crate::clock::PbxClock;
    use crate::codec::{Line, LineCodec};
    use crate::delta2::status_line;
    use crate::tracker::{Output, Tracker, TrackerSettings};

    pub const CALLS: u64 = 20_000;

    pub fn smdr_stream() -> (Vec<u8>, u64) {
        let mut out = String::new();
        let mut lines = 0;
        for i in 0..CALLS {
            let (h, m, s) = (8 + i / 3600 % 10, i / 60 % 60, i % 60);
            let start = format!("2024/05/01 {h:02}:{m:02}:{s:02}");
            let caller = format!("4477009{:05}", i % 100_000);
            let id = 1_000_000 + i;
            if i % 2 == 0 {
                out.push_str(&format!(
                    "{start},00:01:05,7,{caller},I,441234567890,441234567890,,0,{id},0,E4001,Alice,T9001,Line 1.1,12,0,,,,,,,,,,,,,\r\n"
                ));
                lines += 1;
            } else {
                out.push_str(&format!(
                    "{start},00:00:10,3,{caller},I,441234567890,441234567890,,0,{id},1,E4001,Alice,T9001,Line 1.1,5,0,,,,,,,,,,,U XfP,Bob,\r\n"
                ));
                out.push_str(&format!(
                    "{start},00:00:12,2,{caller},I,441234567890,441234567890,,0,{id},0,E4002,Bob,T9001,Line 1.1,0,0,,,,,,,,,,,U Xfd,Alice,\r\n"
                ));
                lines += 2;
            }
        }
        (out.into_bytes(), lines)
    }

    pub fn delta2_stream() -> (Vec<u8>, u64) {
        let mut out = String::new();
        let mut lines = 0;
        for i in 0..CALLS {
            let (a, b, id) = (format!("{}", 2 * i + 1), format!("{}", 2 * i + 2), format!("{}", 1_000_000 + i));
            let caller = format!("4477009{:05}", i % 100_000);
            for (a_state, b_state) in [("1", "1"), ("2", "2"), ("2", "12"), ("2", "2")] {
                out.push_str(&status_line(&[
                    (1, &a),
                    (2, &b),
                    (3, a_state),
                    (4, b_state),
                    (9, "Line 1"),
                    (10, "Alice (4001)"),
                    (15, "441234567890"),
                    (17, &caller),
                    (50, &id),
                ]));
                out.push('\n');
            }
            out.push_str(&format!("CALL: D {a},{b},{id}\n"));
            lines += 5;
        }
        (out.into_bytes(), lines)
    }

    fn tracker(delta2: bool) -> Tracker {
        let settings = TrackerSettings { delta2, smdr: !delta2, remember_calls: 3_000, ..TrackerSettings::default() };
        Tracker::new(
            PbxId::new("bench", PbxType::new("avaya-r9")),
            PbxClock::new("Europe/London").unwrap_or_else(|_| PbxClock::utc()),
            settings,
        )
    }

    /// `examples/throughput*.rs`: `[smdr|delta2] [rounds]` from the command line, runs the
    /// workload that many times and prints lines/s (wall).
    pub fn throughput_main() {
        let mut args = std::env::args().skip(1);
        let which = args.next().unwrap_or_else(|| "smdr".into());
        let rounds: u64 = args.next().and_then(|r| r.parse().ok()).unwrap_or(20);
        let ((stream, lines), delta2) = match which.as_str() {
            "delta2" => (delta2_stream(), true),
            _ => (smdr_stream(), false),
        };
        let started = std::time::Instant::now();
        let mut outputs = 0;
        for _ in 0..rounds {
            outputs += run(&stream, delta2);
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "{which}: {} lines, {outputs} outputs in {secs:.3} s wall = {:.0} lines/s (wall)",
            lines * rounds,
            (lines * rounds) as f64 / secs
        );
    }

    /// Decodes the whole stream through a fresh tracker; returns the number of outputs.
    pub fn run(stream: &[u8], delta2: bool) -> u64 {
        let mut t = tracker(delta2);
        if delta2 {
            t.handle_delta2_link(UnixMillis(1_714_550_400_000), true);
        }
        let mut codec = LineCodec::new(4_096);
        let mut buf = BytesMut::from(stream);
        let now = UnixMillis(1_714_550_400_000);
        let mut outputs = 0;
        while let Ok(Some(line)) = codec.decode(&mut buf) {
            if let Line::Text(l) = line {
                if delta2 {
                    t.handle_delta2_line(now, &l);
                } else {
                    t.handle_smdr_line(now, &l);
                }
            }
            while let Output::Event(_) = t.poll_output() {
                outputs += 1;
            }
        }
        outputs
    }
}
