//! The real samples in `testdata/samples/avaya/`, for tests and benchmarks.
//!
//! Public so that the benchmark and the simulator's tests read the same bytes; not part of the
//! adapter's API.

/// `devlink3_packets_constructed.hex`.
pub const PACKETS_HEX: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/avaya/devlink3_packets_constructed.hex"));

/// `delta3_detail_examples.xml`.
pub const DELTA3_EXAMPLES: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/avaya/delta3_detail_examples.xml"));

/// `devlink3_tuple_strings.txt`.
pub const TUPLE_STRINGS: &str =
    include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/samples/avaya/devlink3_tuple_strings.txt"));

/// The complete frames of `devlink3_packets_constructed.hex`: `(section title, bytes)`. The
/// 3-byte-length example, which the file only sketches (`...`), is returned as a header only
/// by [`long_header_example`].
pub fn sample_frames() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut title = String::new();
    for line in PACKETS_HEX.lines() {
        let line = line.trim();
        if let Some(t) = line.strip_prefix("## ") {
            title = t.to_owned();
        } else if !line.is_empty() && !line.starts_with('#') && !line.contains("...") {
            out.push((title.clone(), hex(line)));
        }
    }
    out
}

/// The header bytes of the 3-byte-length example (`49 81 1c 44`) and the type that follows.
pub fn long_header_example() -> Vec<u8> {
    let line = PACKETS_HEX.lines().find(|l| l.contains("...")).unwrap_or_default();
    hex(line.trim_end_matches('.').trim())
}

fn hex(line: &str) -> Vec<u8> {
    line.split_whitespace().filter_map(|b| u8::from_str_radix(b, 16).ok()).collect()
}

/// The SIPTrack and CMExtn example strings of `devlink3_tuple_strings.txt` (non-comment lines).
pub fn tuple_strings() -> Vec<&'static str> {
    TUPLE_STRINGS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

/// Decodes `chunks` fed one after the other to a [`crate::codec::FrameCodec`] of `max` bytes,
/// then EOF: the frames, or the error that lost the stream. Shared by the codec's tests and the
/// fuzz target, which both compare decodes of differently split input.
pub fn decode_chunks(max: usize, chunks: &[&[u8]]) -> Result<Vec<crate::codec::Frame>, String> {
    use tokio_util::codec::Decoder;
    let mut codec = crate::codec::FrameCodec::new(max);
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = codec.decode(&mut buf).map_err(|e| e.to_string())? {
            out.push(item);
        }
    }
    while let Some(item) = codec.decode_eof(&mut buf).map_err(|e| e.to_string())? {
        out.push(item);
    }
    Ok(out)
}
