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
