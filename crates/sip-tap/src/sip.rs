//! A lenient SIP message reader for captured traffic: start line, headers, body framing.
//!
//! Captured traffic is whatever the peers sent, so this reads everything RFC 3261 allows and
//! RFC 4475 tortures with: folded lines (§7.3.1), whitespace before the colon, compact names
//! (§7.3.3), case-insensitive names, extension methods, comma-combined values, bare-LF line
//! ends, non-UTF-8 bytes (kept, read lossily where text is needed), CRLF keep-alives between
//! stream messages (RFC 5626). It rejects what a listener cannot trust: a missing or unusable
//! Call-ID/From/To/CSeq, a broken Via, a negative, non-numeric, conflicting or overlong
//! Content-Length. It extracts; it never rewrites or re-serialises.
//!
//! Framing (RFC 3261 §18.3): on a stream the body is exactly Content-Length bytes (absent means
//! 0) and the next message follows; in a datagram the body is Content-Length bytes when given,
//! else the rest of the datagram, and bytes after the first message are ignored (RFC 4475
//! `dblreq`: only the first request is processed).

use std::borrow::Cow;

/// Why a message could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SipError {
    /// Nothing but whitespace.
    #[error("empty message")]
    Empty,
    /// The first line is neither a request line nor a status line.
    #[error("bad start line")]
    BadStartLine,
    /// A header line has no name or no colon.
    #[error("bad header line at byte {offset}")]
    BadHeaderLine {
        /// Where the line starts in the message.
        offset: usize,
    },
    /// The headers do not end (no empty line).
    #[error("the header section does not end")]
    NoHeaderEnd,
    /// A required header is missing or empty.
    #[error("missing {0} header")]
    Missing(&'static str),
    /// CSeq is not `<number> <method>`.
    #[error("bad CSeq")]
    BadCSeq,
    /// A Via value is not `SIP/2.0/<transport> <sent-by>[;params]`.
    #[error("bad Via")]
    BadVia,
    /// From or To is unreadable.
    #[error("bad {0} header")]
    BadAddress(&'static str),
    /// Content-Length is not a non-negative number.
    #[error("bad Content-Length")]
    BadContentLength,
    /// Two Content-Length headers disagree.
    #[error("conflicting Content-Length headers")]
    ConflictingContentLength,
    /// Content-Length promises more bytes than the datagram has.
    #[error("Content-Length exceeds the datagram")]
    BodyTruncated,
    /// The message is larger than the configured maximum.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

impl SipError {
    /// A short label for metrics (bounded set).
    pub fn kind(&self) -> &'static str {
        match self {
            SipError::Empty => "empty",
            SipError::BadStartLine => "start-line",
            SipError::BadHeaderLine { .. } => "header-line",
            SipError::NoHeaderEnd => "no-header-end",
            SipError::Missing(_) => "missing-header",
            SipError::BadCSeq => "cseq",
            SipError::BadVia => "via",
            SipError::BadAddress(_) => "address",
            SipError::BadContentLength | SipError::ConflictingContentLength => "content-length",
            SipError::BodyTruncated => "body-truncated",
            SipError::TooLarge(_) => "too-large",
        }
    }
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `METHOD uri SIP/2.0`. Methods are case-sensitive (RFC 3261 §7.1) and any token.
    Request {
        /// The method, as sent.
        method: &'a str,
        /// The Request-URI, as sent.
        uri: &'a str,
    },
    /// `SIP/2.0 code reason`.
    Response {
        /// The status code.
        status: u16,
        /// The reason phrase (possibly empty; non-UTF-8 bytes replaced).
        reason: Cow<'a, str>,
    },
}

/// The headers this reader knows by name (long and compact forms, any case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownHeader {
    /// `Call-ID` / `i`.
    CallId,
    /// `From` / `f`.
    From,
    /// `To` / `t`.
    To,
    /// `Via` / `v`.
    Via,
    /// `CSeq`.
    CSeq,
    /// `Content-Length` / `l`.
    ContentLength,
    /// `Content-Type` / `c`.
    ContentType,
    /// `Contact` / `m`.
    Contact,
    /// `User-to-User` (RFC 7433).
    UserToUser,
    /// Anything else.
    Other,
}

impl KnownHeader {
    /// Classifies a header name (case-insensitive, compact forms of RFC 3261 §7.3.3).
    pub fn of(name: &str) -> KnownHeader {
        if name.len() == 1 {
            return match name.as_bytes()[0].to_ascii_lowercase() {
                b'i' => KnownHeader::CallId,
                b'f' => KnownHeader::From,
                b't' => KnownHeader::To,
                b'v' => KnownHeader::Via,
                b'l' => KnownHeader::ContentLength,
                b'c' => KnownHeader::ContentType,
                b'm' => KnownHeader::Contact,
                _ => KnownHeader::Other,
            };
        }
        const NAMES: [(&str, KnownHeader); 9] = [
            ("call-id", KnownHeader::CallId),
            ("from", KnownHeader::From),
            ("to", KnownHeader::To),
            ("via", KnownHeader::Via),
            ("cseq", KnownHeader::CSeq),
            ("content-length", KnownHeader::ContentLength),
            ("content-type", KnownHeader::ContentType),
            ("contact", KnownHeader::Contact),
            ("user-to-user", KnownHeader::UserToUser),
        ];
        NAMES.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map_or(KnownHeader::Other, |(_, k)| *k)
    }
}

/// One header field, unfolded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header<'a> {
    /// The name as sent.
    pub name: &'a str,
    /// What the name means.
    pub known: KnownHeader,
    /// The value: unfolded (each line break with its indentation becomes one space), trimmed,
    /// non-UTF-8 bytes replaced.
    pub value: Cow<'a, str>,
}

impl Header<'_> {
    /// Whether this is the header `name` (classified as `known`).
    fn is(&self, known: KnownHeader, name: &str) -> bool {
        if known == KnownHeader::Other {
            long_name(self.name).eq_ignore_ascii_case(long_name(name))
        } else {
            self.known == known
        }
    }
}

/// The long form of a compact header name (RFC 3261 §7.3.3 and the IANA registry), or the
/// name itself.
pub fn long_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    match name.as_bytes()[0].to_ascii_lowercase() {
        b'a' => "Accept-Contact",
        b'b' => "Referred-By",
        b'c' => "Content-Type",
        b'd' => "Request-Disposition",
        b'e' => "Content-Encoding",
        b'f' => "From",
        b'i' => "Call-ID",
        b'j' => "Reject-Contact",
        b'k' => "Supported",
        b'l' => "Content-Length",
        b'm' => "Contact",
        b'n' => "Identity-Info",
        b'o' => "Event",
        b'r' => "Refer-To",
        b's' => "Subject",
        b't' => "To",
        b'u' => "Allow-Events",
        b'v' => "Via",
        b'x' => "Session-Expires",
        b'y' => "Identity",
        _ => name,
    }
}

/// `CSeq: <seq> <method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// The sequence number.
    pub seq: u32,
    /// The method.
    pub method: &'a str,
}

/// A From or To value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// The display name, unquoted and unescaped.
    pub display: Option<String>,
    /// The URI without its `<>`.
    pub uri: String,
    /// The `tag` parameter.
    pub tag: Option<String>,
}

impl NameAddr {
    /// The URI's user part (`+15551230100` of `sip:+15551230100@host`), if it has one.
    pub fn user(&self) -> Option<&str> {
        uri_user(&self.uri)
    }
}

/// One Via value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `UDP`, `TCP`, `TLS`, …
    pub transport: String,
    /// `host[:port]`.
    pub sent_by: String,
    /// The `branch` parameter.
    pub branch: Option<String>,
}

/// A SIP message read from a buffer. Borrowed from it where it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipMessage<'a> {
    /// Request or status line.
    pub start: StartLine<'a>,
    /// The headers, in order.
    pub headers: Vec<Header<'a>>,
    /// The body (exactly Content-Length bytes, or the rest of a datagram without one).
    pub body: &'a [u8],
    /// How many bytes of the input this message (with any CRLFs before it) used.
    pub consumed: usize,
}

/// How the end of a message is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One UDP datagram: body to Content-Length, else to the end.
    Datagram,
    /// A TCP stream: body is Content-Length bytes (0 if absent); more may follow.
    Stream,
}

/// Reads the first message of a datagram.
pub fn parse_datagram(buf: &[u8], max_bytes: usize) -> Result<SipMessage<'_>, SipError> {
    match parse(buf, Framing::Datagram, max_bytes)? {
        Some(m) => Ok(m),
        // A datagram is all there is: what is missing will not come.
        None => Err(SipError::NoHeaderEnd),
    }
}

/// Reads the next message of a stream: `Ok(None)` when `buf` does not hold all of it yet.
/// Leading CRLFs (keep-alives) are skipped and counted in `consumed`. An error means the
/// stream's framing is lost.
pub fn parse_stream(buf: &[u8], max_bytes: usize) -> Result<Option<SipMessage<'_>>, SipError> {
    parse(buf, Framing::Stream, max_bytes)
}

/// How many leading bytes of a stream buffer are only keep-alive line ends.
pub fn keepalive_len(buf: &[u8]) -> usize {
    buf.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count()
}

fn parse(buf: &[u8], framing: Framing, max_bytes: usize) -> Result<Option<SipMessage<'_>>, SipError> {
    let start = keepalive_len(buf);
    let msg = &buf[start..];
    if msg.is_empty() || msg.iter().all(u8::is_ascii_whitespace) {
        return match framing {
            Framing::Datagram => Err(SipError::Empty),
            Framing::Stream => Ok(None),
        };
    }
    let Some((head_len, body_start)) = find_head_end(msg) else {
        if msg.len() > max_bytes {
            return Err(SipError::TooLarge(max_bytes));
        }
        return match framing {
            Framing::Datagram => Err(SipError::NoHeaderEnd),
            Framing::Stream => Ok(None),
        };
    };
    if head_len > max_bytes {
        return Err(SipError::TooLarge(max_bytes));
    }
    let head = &msg[..head_len];
    let mut lines = Lines { buf: head, pos: 0 };
    let first = lines.next().ok_or(SipError::BadStartLine)?;
    let start_line = parse_start_line(first.1)?;
    let mut headers: Vec<Header<'_>> = Vec::with_capacity(16);
    for (offset, line) in lines {
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // A continuation line: unfold into the previous header.
            let last = headers.last_mut().ok_or(SipError::BadHeaderLine { offset })?;
            let more = String::from_utf8_lossy(line);
            let more = more.trim();
            if !more.is_empty() {
                let v = last.value.to_mut();
                if !v.is_empty() {
                    v.push(' ');
                }
                v.push_str(more);
            }
            continue;
        }
        let name_len = line.iter().take_while(|b| is_token(**b)).count();
        let rest = &line[name_len..];
        let ws = rest.iter().take_while(|b| matches!(b, b' ' | b'\t')).count();
        if name_len == 0 || rest.get(ws) != Some(&b':') {
            return Err(SipError::BadHeaderLine { offset });
        }
        // Token characters are ASCII, so the name is valid UTF-8.
        let name = std::str::from_utf8(&line[..name_len]).map_err(|_| SipError::BadHeaderLine { offset })?;
        let value = trim_cow(String::from_utf8_lossy(&rest[ws + 1..]));
        headers.push(Header { name, known: KnownHeader::of(name), value });
    }

    let mut content_length: Option<usize> = None;
    for h in headers.iter().filter(|h| h.known == KnownHeader::ContentLength) {
        let v = h.value.trim();
        if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SipError::BadContentLength);
        }
        let n: usize = v.parse().map_err(|_| SipError::BadContentLength)?;
        if content_length.is_some_and(|c| c != n) {
            return Err(SipError::ConflictingContentLength);
        }
        content_length = Some(n);
    }
    let available = msg.len() - body_start;
    let body_len = match (framing, content_length) {
        (_, Some(n)) if n > max_bytes => return Err(SipError::TooLarge(max_bytes)),
        (Framing::Datagram, Some(n)) if n > available => return Err(SipError::BodyTruncated),
        (Framing::Stream, Some(n)) if n > available => return Ok(None),
        (_, Some(n)) => n,
        (Framing::Datagram, None) => available,
        // RFC 3261 §18.3 makes Content-Length mandatory on streams; without it, no body.
        (Framing::Stream, None) => 0,
    };
    if body_start + body_len > max_bytes {
        return Err(SipError::TooLarge(max_bytes));
    }
    let message = SipMessage {
        start: start_line,
        headers,
        body: &msg[body_start..body_start + body_len],
        consumed: start + body_start + body_len,
    };
    message.check()?;
    Ok(Some(message))
}

/// The header section's length and where the body starts: after the first empty line
/// (CRLF CRLF, or bare LF LF).
fn find_head_end(msg: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while let Some(nl) = memchr(b'\n', &msg[i..]) {
        let at = i + nl;
        let next = at + 1;
        match msg.get(next) {
            Some(b'\n') => return Some((next, next + 1)),
            Some(b'\r') if msg.get(next + 1) == Some(&b'\n') => return Some((next, next + 2)),
            _ => i = next,
        }
    }
    None
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

/// Lines of the header section without their line ends, with their offsets.
struct Lines<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = (usize, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let start = self.pos;
        let rest = &self.buf[start..];
        let (line, advance) = match memchr(b'\n', rest) {
            Some(n) => (&rest[..n], n + 1),
            None => (rest, rest.len()),
        };
        self.pos += advance;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Some((start, line))
    }
}

fn trim_cow(c: Cow<'_, str>) -> Cow<'_, str> {
    match c {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    }
}

/// RFC 3261 `token` characters.
fn is_token(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn parse_start_line(line: &[u8]) -> Result<StartLine<'_>, SipError> {
    if line.len() >= 8 && line[..8].eq_ignore_ascii_case(b"SIP/2.0 ") {
        let rest = &line[8..];
        let code = rest.get(..3).ok_or(SipError::BadStartLine)?;
        if !code.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|b| *b != b' ') {
            return Err(SipError::BadStartLine);
        }
        let status: u16 = std::str::from_utf8(code).ok().and_then(|s| s.parse().ok()).ok_or(SipError::BadStartLine)?;
        if !(100..=699).contains(&status) {
            return Err(SipError::BadStartLine);
        }
        let reason = rest.get(4..).unwrap_or(b"");
        return Ok(StartLine::Response { status, reason: String::from_utf8_lossy(reason) });
    }
    let sp1 = memchr(b' ', line).ok_or(SipError::BadStartLine)?;
    let sp2 = line.iter().rposition(|b| *b == b' ').ok_or(SipError::BadStartLine)?;
    let (method, uri, version) = (&line[..sp1], &line[sp1 + 1..sp2.max(sp1 + 1)], &line[sp2 + 1..]);
    if sp2 <= sp1
        || method.is_empty()
        || !method.iter().all(|b| is_token(*b))
        || uri.is_empty()
        || uri.contains(&b' ')
        || !version.eq_ignore_ascii_case(b"SIP/2.0")
    {
        return Err(SipError::BadStartLine);
    }
    let method = std::str::from_utf8(method).map_err(|_| SipError::BadStartLine)?;
    let uri = std::str::from_utf8(uri).map_err(|_| SipError::BadStartLine)?;
    Ok(StartLine::Request { method, uri })
}

impl<'a> SipMessage<'a> {
    /// The first value of a header, by any of its names (case-insensitive; `Call-ID` and `i`
    /// are the same header).
    pub fn header(&self, name: &str) -> Option<&str> {
        let known = KnownHeader::of(name);
        self.headers.iter().find(|h| h.is(known, name)).map(|h| h.value.as_ref())
    }

    /// Every value of a header, by name, in order.
    pub fn headers_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s str> + 's {
        let known = KnownHeader::of(name);
        self.headers.iter().filter(move |h| h.is(known, name)).map(|h| h.value.as_ref())
    }

    fn known(&self, k: KnownHeader) -> Option<&str> {
        self.headers.iter().find(|h| h.known == k).map(|h| h.value.as_ref())
    }

    /// The Call-ID.
    pub fn call_id(&self) -> &str {
        // `check` made sure it is there.
        self.known(KnownHeader::CallId).unwrap_or_default()
    }

    /// The method of a request, `None` for a response.
    pub fn method(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The status of a response, `None` for a request.
    pub fn status(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The Request-URI's user part, for a request.
    pub fn request_uri_user(&self) -> Option<&'a str> {
        match self.start {
            StartLine::Request { uri, .. } => uri_user(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq<'_>, SipError> {
        let v = self.known(KnownHeader::CSeq).ok_or(SipError::Missing("CSeq"))?;
        let mut parts = v.split_ascii_whitespace();
        let seq = parts.next().and_then(|s| s.parse::<u32>().ok()).ok_or(SipError::BadCSeq)?;
        let method = parts.next().filter(|m| m.bytes().all(is_token)).ok_or(SipError::BadCSeq)?;
        if parts.next().is_some() {
            return Err(SipError::BadCSeq);
        }
        Ok(CSeq { seq, method })
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr, SipError> {
        parse_name_addr(self.known(KnownHeader::From).ok_or(SipError::Missing("From"))?)
            .ok_or(SipError::BadAddress("From"))
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr, SipError> {
        parse_name_addr(self.known(KnownHeader::To).ok_or(SipError::Missing("To"))?).ok_or(SipError::BadAddress("To"))
    }

    /// Every Via value, top first, across Via headers and comma-combined values.
    pub fn vias(&self) -> Result<Vec<Via>, SipError> {
        let mut out = Vec::new();
        for v in self.headers.iter().filter(|h| h.known == KnownHeader::Via) {
            for part in split_outside_quotes(&v.value, b',') {
                out.push(parse_via(part).ok_or(SipError::BadVia)?);
            }
        }
        Ok(out)
    }

    /// The `User-to-User` value (RFC 7433), as sent.
    pub fn user_to_user(&self) -> Option<&str> {
        self.known(KnownHeader::UserToUser)
    }

    /// Content-Length, when given.
    pub fn content_length(&self) -> Option<usize> {
        self.known(KnownHeader::ContentLength).and_then(|v| v.trim().parse().ok())
    }

    /// The checks every message must pass to be trusted as a leg fact.
    fn check(&self) -> Result<(), SipError> {
        if self.known(KnownHeader::CallId).is_none_or(|c| c.is_empty() || c.contains(char::is_whitespace)) {
            return Err(SipError::Missing("Call-ID"));
        }
        self.cseq()?;
        let from = self.known(KnownHeader::From).ok_or(SipError::Missing("From"))?;
        name_addr_parts(from).ok_or(SipError::BadAddress("From"))?;
        let to = self.known(KnownHeader::To).ok_or(SipError::Missing("To"))?;
        name_addr_parts(to).ok_or(SipError::BadAddress("To"))?;
        let mut vias = 0;
        for v in self.headers.iter().filter(|h| h.known == KnownHeader::Via) {
            for part in split_outside_quotes(&v.value, b',') {
                via_parts(part).ok_or(SipError::BadVia)?;
                vias += 1;
            }
        }
        if vias == 0 && matches!(self.start, StartLine::Request { .. }) {
            return Err(SipError::Missing("Via"));
        }
        Ok(())
    }
}

/// Splits on `sep` outside double-quoted strings (with backslash escapes) and `<>`.
pub(crate) fn split_outside_quotes(s: &str, sep: u8) -> SplitOutside<'_> {
    SplitOutside { s, pos: 0, sep, done: false }
}

/// The iterator of [`split_outside_quotes`] (no allocation: it runs per header value).
pub(crate) struct SplitOutside<'a> {
    s: &'a str,
    pos: usize,
    sep: u8,
    done: bool,
}

impl<'a> Iterator for SplitOutside<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        if self.done {
            return None;
        }
        let bytes = self.s.as_bytes();
        let start = self.pos;
        let (mut quoted, mut escaped, mut angle) = (false, false, false);
        for (i, &b) in bytes.iter().enumerate().skip(start) {
            if escaped {
                escaped = false;
                continue;
            }
            match b {
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                _ if b == self.sep && !quoted && !angle => {
                    self.pos = i + 1;
                    // `sep` is ASCII, so both sides are on char boundaries.
                    return Some(&self.s[start..i]);
                }
                _ => {}
            }
        }
        self.done = true;
        Some(&self.s[start..])
    }
}

/// `name-addr` or `addr-spec` with header parameters (RFC 3261 §20.20, §20.39).
fn parse_name_addr(v: &str) -> Option<NameAddr> {
    let parts = name_addr_parts(v)?;
    let display = match parts.display {
        Some(Display::Quoted(q)) => Some(unescape(q)),
        Some(Display::Token(t)) => Some(t.to_owned()),
        None => None,
    };
    Some(NameAddr { display, uri: parts.uri.to_owned(), tag: parts.tag.map(str::to_owned) })
}

/// A display name as written.
enum Display<'a> {
    /// The content after the opening quote (escapes not yet undone).
    Quoted(&'a str),
    /// An unquoted display name.
    Token(&'a str),
}

/// A From/To value's parts, borrowed.
struct NameAddrParts<'a> {
    display: Option<Display<'a>>,
    uri: &'a str,
    tag: Option<&'a str>,
}

/// Reads a From/To value without allocating (the checks of every message run it).
fn name_addr_parts(v: &str) -> Option<NameAddrParts<'_>> {
    let v = v.trim();
    let (display, uri, params) = if let Some(rest) = v.strip_prefix('"') {
        // A quoted display name, then <uri>.
        let after = skip_quoted(rest)?;
        let quoted = &rest[..rest.len() - after.len() - 1];
        let after = after.trim_start();
        let inner = after.strip_prefix('<')?;
        let close = inner.find('>')?;
        (Some(Display::Quoted(quoted)), &inner[..close], &inner[close + 1..])
    } else if let Some(open) = v.find('<') {
        let close = open + v[open..].find('>')?;
        let d = v[..open].trim();
        (if d.is_empty() { None } else { Some(Display::Token(d)) }, &v[open + 1..close], &v[close + 1..])
    } else {
        // addr-spec: parameters after the first `;` belong to the header (§20.10).
        match v.find(';') {
            Some(i) => (None, &v[..i], &v[i..]),
            None => (None, v, ""),
        }
    };
    let uri = uri.trim();
    if uri.is_empty() || !uri.contains(':') {
        return None;
    }
    let mut tag = None;
    let params = params.trim();
    if !params.is_empty() {
        let params = params.strip_prefix(';')?;
        for p in split_outside_quotes(params, b';') {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            if name.is_empty() || !name.bytes().all(is_token) {
                return None;
            }
            if name.eq_ignore_ascii_case("tag") {
                tag = value.filter(|t| !t.is_empty());
            }
        }
    }
    Some(NameAddrParts { display, uri, tag })
}

/// What follows a quoted string's closing quote (the input starts after the opening one).
fn skip_quoted(s: &str) -> Option<&str> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(&s[i + 1..]),
            _ => i += 1,
        }
    }
    None
}

/// A quoted string's content (between the quotes) with its backslash escapes undone.
fn unescape(q: &str) -> String {
    let mut out = String::with_capacity(q.len());
    let mut chars = q.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `SIP / 2.0 / UDP host[:port] *( ; param )`, linear whitespace allowed around separators.
fn parse_via(v: &str) -> Option<Via> {
    let (transport, sent_by, branch) = via_parts(v)?;
    Some(Via {
        transport: transport.to_owned(),
        sent_by: sent_by.split_ascii_whitespace().collect(),
        branch: branch.map(str::to_owned),
    })
}

/// A Via value's transport, sent-by (possibly with inner whitespace) and branch, borrowed.
fn via_parts(v: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut parts = split_outside_quotes(v, b';');
    let sent = parts.next()?;
    let mut slash = sent.splitn(3, '/');
    let (proto, version, rest) = (slash.next()?.trim(), slash.next()?.trim(), slash.next()?.trim_start());
    if !proto.eq_ignore_ascii_case("SIP") || version.is_empty() {
        return None;
    }
    let split = rest.find([' ', '\t']).unwrap_or(rest.len());
    let transport = &rest[..split];
    let sent_by = rest[split..].trim();
    if transport.is_empty() || !transport.bytes().all(is_token) || sent_by.is_empty() {
        return None;
    }
    let mut branch = None;
    for p in parts {
        let (name, value) = match p.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (p.trim(), None),
        };
        if name.is_empty() || !name.bytes().all(is_token) || value.is_some_and(str::is_empty) {
            return None;
        }
        if name.eq_ignore_ascii_case("branch") {
            branch = value;
        }
    }
    Some((transport, sent_by, branch))
}

/// The user part of a `sip:`/`sips:` URI (before `@`, without a password), or the number of a
/// `tel:` URI.
pub fn uri_user(uri: &str) -> Option<&str> {
    let uri = uri.trim();
    let (scheme, rest) = uri.split_once(':')?;
    if scheme.eq_ignore_ascii_case("tel") {
        let number = rest.split(';').next().unwrap_or(rest);
        return (!number.is_empty()).then_some(number);
    }
    if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
        return None;
    }
    let (userinfo, _) = rest.split_once('@')?;
    let user = userinfo.split(':').next().unwrap_or(userinfo);
    (!user.is_empty()).then_some(user)
}

/// A URI user with its `%HH` escapes undone: RFC 3261 §19.1.4 compares URIs after unescaping,
/// so `+%344%31234567890` is `+441234567890`. When an escape is invalid (not two hex digits) or
/// the result is not UTF-8, the user is returned as it was written.
pub fn unescape_user(user: &str) -> Cow<'_, str> {
    if !user.contains('%') {
        return Cow::Borrowed(user);
    }
    let bytes = user.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let Some(decoded) = bytes.get(i + 1..i + 3).and_then(hex_byte) else { return Cow::Borrowed(user) };
            out.push(decoded);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_or(Cow::Borrowed(user), Cow::Owned)
}

/// Two hex digits as a byte (`from_str_radix` alone would also take a sign).
fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |c: u8| (c as char).to_digit(16);
    match pair {
        [hi, lo] => Some(u8::try_from(digit(*hi)? * 16 + digit(*lo)?).ok()?),
        _ => None,
    }
}

/// A URI user as a number: E.164 digits without `+` when it is a phone number (escapes undone
/// by [`unescape_user`], visual separators removed), else `None`.
pub fn as_number(user: &str) -> Option<String> {
    let user = unescape_user(user);
    let bare = user.strip_prefix('+').unwrap_or(&user);
    let digits: String = bare.chars().filter(char::is_ascii_digit).collect();
    (!digits.is_empty() && bare.chars().all(|c| c.is_ascii_digit() || "-.()".contains(c))).then_some(digits)
}

/// The bytes of a `User-to-User` value with `encoding=hex` (RFC 7433): the hex data before
/// the first `;`, decoded. `None` when it is not hex-encoded or not valid hex.
pub fn uui_bytes(value: &str) -> Option<Vec<u8>> {
    let mut parts = value.split(';');
    let data = parts.next()?.trim();
    let hex = parts.any(|p| {
        p.split_once('=')
            .is_some_and(|(n, v)| n.trim().eq_ignore_ascii_case("encoding") && v.trim().eq_ignore_ascii_case("hex"))
    });
    if !hex || data.len() % 2 != 0 {
        return None;
    }
    (0..data.len()).step_by(2).map(|i| u8::from_str_radix(data.get(i..i + 2)?, 16).ok()).collect()
}
