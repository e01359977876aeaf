//! Line framing for both feeds: bytes → lines.
//!
//! SMDR terminates each record with CR LF (IP Office Web Manager, "SMDR Fields"); the Delta2
//! relay sends one record per line. [`LineCodec`] accepts CR LF and a bare LF, drops blank
//! lines, and bounds a line's length: a longer line is reported once as [`Line::TooLong`] (with
//! how many bytes were skipped), its bytes are discarded as they arrive without being buffered,
//! and the stream goes on with the next line. The decoder never returns an error of its own:
//! `Err` only carries a socket error, because a line stream cannot lose its boundaries.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// The default longest line, in bytes. An SMDR record of 35 full fields is under 1 KiB; a
/// Delta2 record is under 1500 bytes (devlink.h).
pub const DEFAULT_MAX_LINE_BYTES: usize = 4_096;

/// One item of the line decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A line without its terminator (never empty).
    Text(Bytes),
    /// A line longer than the maximum was skipped.
    TooLong {
        /// Its length in bytes, without the terminator.
        bytes: usize,
    },
}

/// Bounded CR LF / LF line decoder. See the module documentation.
#[derive(Debug, Clone)]
pub struct LineCodec {
    max: usize,
    /// Bytes already searched for a newline (so a slow line is not rescanned).
    scanned: usize,
    /// Bytes of an over-long line discarded so far, when inside one.
    discarding: Option<usize>,
}

impl LineCodec {
    /// A decoder for lines of at most `max_line_bytes` bytes (at least 1).
    pub fn new(max_line_bytes: usize) -> LineCodec {
        LineCodec { max: max_line_bytes.max(1), scanned: 0, discarding: None }
    }

    /// The longest line accepted.
    pub fn max_line_bytes(&self) -> usize {
        self.max
    }

    /// The next item from `buf`, `None` when more bytes are needed.
    fn next_line(&mut self, buf: &mut BytesMut) -> Option<Line> {
        loop {
            let found = memchr_newline(&buf[self.scanned..]).map(|i| i + self.scanned);
            match (found, self.discarding) {
                (Some(i), Some(skipped)) => {
                    // The CR of a CR LF is terminator, not content.
                    let content = if i > 0 && buf[i - 1] == b'\r' { i - 1 } else { i };
                    buf.advance(i + 1);
                    self.scanned = 0;
                    self.discarding = None;
                    return Some(Line::TooLong { bytes: skipped + content });
                }
                (Some(i), None) => {
                    let mut line = buf.split_to(i + 1).freeze();
                    self.scanned = 0;
                    let mut end = line.len() - 1;
                    if end > 0 && line[end - 1] == b'\r' {
                        end -= 1;
                    }
                    if end == 0 {
                        continue; // A blank line carries nothing.
                    }
                    if end > self.max {
                        return Some(Line::TooLong { bytes: end });
                    }
                    line.truncate(end);
                    return Some(Line::Text(line));
                }
                (None, Some(skipped)) => {
                    // Keep a final CR: it may be the first half of the terminator.
                    let keep = usize::from(buf.last() == Some(&b'\r'));
                    let drop = buf.len() - keep;
                    buf.advance(drop);
                    self.discarding = Some(skipped + drop);
                    self.scanned = 0;
                    return None;
                }
                (None, None) => {
                    // A line of exactly `max` bytes may wait for its LF after its CR.
                    if buf.len() > self.max + 1 {
                        self.discarding = Some(0);
                        continue;
                    }
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }
}

fn memchr_newline(s: &[u8]) -> Option<usize> {
    // Eight bytes at a time: a byte-by-byte search was a tenth of the SMDR path.
    let mut chunks = s.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mask = byte_mask(word(chunk), b'\n');
        if mask != 0 {
            return Some(base + (mask.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    chunks.remainder().iter().position(|b| *b == b'\n').map(|i| base + i)
}

/// Eight bytes (at most; fewer are zero-padded) as a little-endian word, byte `i` in bits
/// `8i..8i+8`.
pub(crate) fn word(bytes: &[u8]) -> u64 {
    let mut w = [0; 8];
    let n = bytes.len().min(8);
    w[..n].copy_from_slice(&bytes[..n]);
    u64::from_le_bytes(w)
}

/// The top bit of each byte of `w` that equals `byte`, and no other bit (exact for every
/// byte, not only the first: no borrow crosses bytes).
pub(crate) fn byte_mask(w: u64, byte: u8) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = w ^ (u64::from(byte) * 0x0101_0101_0101_0101);
    // A byte of `x` is 0 exactly when adding 0x7f to its low seven bits does not carry into
    // its top bit and its own top bit is clear.
    !(((x & LOW7) + LOW7) | x | LOW7)
}

impl Decoder for LineCodec {
    type Item = Line;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        Ok(self.next_line(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Line>, std::io::Error> {
        if let Some(line) = self.next_line(buf) {
            return Ok(Some(line));
        }
        // The stream ended without a final newline: what is left is the last line.
        self.scanned = 0;
        if let Some(skipped) = self.discarding.take() {
            let rest = buf.len() - usize::from(buf.last() == Some(&b'\r'));
            buf.clear();
            return Ok(Some(Line::TooLong { bytes: skipped + rest }));
        }
        let mut end = buf.len();
        if end > 0 && buf[end - 1] == b'\r' {
            end -= 1;
        }
        let line = buf.split().freeze();
        if end == 0 {
            return Ok(None);
        }
        if end > self.max {
            return Ok(Some(Line::TooLong { bytes: end }));
        }
        Ok(Some(Line::Text(line.slice(..end))))
    }
}

/// Decodes `chunks` fed one after the other, then EOF. Shared by tests, the fuzz target and
/// the benchmark, which compare decodes of differently split input.
pub fn decode_chunks(max_line_bytes: usize, chunks: &[&[u8]]) -> Vec<Line> {
    let mut codec = LineCodec::new(max_line_bytes);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Ok(Some(line)) = codec.decode(&mut buf) {
            out.push(line);
        }
    }
    while let Ok(Some(line)) = codec.decode_eof(&mut buf) {
        out.push(line);
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn text(s: &str) -> Line {
        Line::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn crlf_bare_lf_blank_lines_and_a_last_line_without_newline() {
        let got = decode_chunks(100, &[b"a,b\r\nc\n\r\n\nd\r"]);
        assert_eq!(got, [text("a,b"), text("c"), text("d")]);
    }

    #[test]
    fn an_over_long_line_is_skipped_once_and_the_stream_goes_on() {
        let long = "x".repeat(50);
        let input = format!("ok\r\n{long}\r\nnext\r\n");
        for split in 0..input.len() {
            let (a, b) = input.as_bytes().split_at(split);
            let got = decode_chunks(10, &[a, b]);
            assert_eq!(got, [text("ok"), Line::TooLong { bytes: 50 }, text("next")], "split at {split}");
        }
        // Exactly the maximum is fine, with CR LF split anywhere.
        let ten = format!("{}\r\n", "y".repeat(10));
        for split in 0..ten.len() {
            let (a, b) = ten.as_bytes().split_at(split);
            assert_eq!(decode_chunks(10, &[a, b]), [text(&"y".repeat(10))]);
        }
        // An over-long last line without newline.
        assert_eq!(decode_chunks(3, &[b"abcdef"]), [Line::TooLong { bytes: 6 }]);
    }

    #[test]
    fn memory_stays_bounded_inside_an_over_long_line() {
        let mut codec = LineCodec::new(16);
        let mut buf = BytesMut::new();
        for _ in 0..1_000 {
            buf.extend_from_slice(&[b'z'; 100]);
            assert_eq!(codec.decode(&mut buf).unwrap(), None);
            assert!(buf.len() <= 17, "{}", buf.len());
        }
        buf.extend_from_slice(b"\nafter\n");
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(Line::TooLong { bytes: 100_000 }));
        assert_eq!(codec.decode(&mut buf).unwrap(), Some(text("after")));
    }

    proptest! {
        /// The word-at-a-time search finds what a byte-by-byte one does, and the byte mask
        /// marks exactly the bytes equal to the one looked for.
        #[test]
        fn word_search_agrees_with_a_byte_search(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b','), Just(0x8a), Just(0xac), any::<u8>()], 0..40),
            byte in prop_oneof![Just(b'\n'), Just(b','), any::<u8>()],
        ) {
            prop_assert_eq!(memchr_newline(&data), data.iter().position(|b| *b == b'\n'));
            for chunk in data.chunks(8) {
                let mask = byte_mask(word(chunk), byte);
                for i in 0..8 {
                    let expected = chunk.get(i).map_or(byte == 0, |b| *b == byte);
                    prop_assert_eq!(mask >> (8 * i) & 0xff, if expected { 0x80 } else { 0 });
                }
            }
        }

        /// Any split of the byte stream gives the same lines.
        #[test]
        fn any_split_gives_the_same_lines(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b','), Just(b'a'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..8),
            max in 1usize..40,
        ) {
            let whole = decode_chunks(max, &[&data]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.sort_unstable();
            let mut chunks = Vec::new();
            let mut at = 0;
            for c in cuts {
                chunks.push(&data[at..c]);
                at = c;
            }
            chunks.push(&data[at..]);
            prop_assert_eq!(&decode_chunks(max, &chunks), &whole);
            let bytes: Vec<&[u8]> = data.chunks(1).collect();
            prop_assert_eq!(&decode_chunks(max, &bytes), &whole);
            for line in &whole {
                if let Line::Text(t) = line {
                    prop_assert!(!t.is_empty() && t.len() <= max && !t.contains(&b'\n'));
                }
            }
        }
    }
}
