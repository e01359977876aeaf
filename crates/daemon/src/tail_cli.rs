//! `pbx-listener tail`: the Level 3 events the running daemon commits, live, from its admin
//! endpoint (`/events/tail`, server-sent events). Events go to stdout (JSON lines, or one
//! readable line each); notices (missed events, the daemon going away) go to stderr.
//!
//! Exit codes: 0 after `--count` events, 1 when the daemon ends the stream or refuses the
//! client, 3 when it cannot be reached.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use hyper::StatusCode;
use hyper::body::Body;

use crate::admin_client;
use crate::cli::{TailArgs, TailFormat};
use crate::status_cli::EXIT_UNKNOWN;

/// How long to wait for the daemon to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest server-sent line accepted (an event is a few hundred bytes).
const MAX_LINE: usize = 1 << 20;

/// Runs the command; returns the exit code.
pub async fn run(args: &TailArgs, config: &std::path::Path) -> u8 {
    let addr = match admin_client::admin_addr(args.admin, config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pbx-listener tail: {e:#}");
            return EXIT_UNKNOWN;
        }
    };
    let path = format!("/events/tail{}", query(args));
    let response = match admin_client::get(addr, &path, TIMEOUT).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pbx-listener tail: cannot reach the daemon's admin endpoint at {addr}: {e:#}");
            return EXIT_UNKNOWN;
        }
    };
    if response.status() != StatusCode::OK {
        let status = response.status();
        let body = http_body_util::BodyExt::collect(http_body_util::Limited::new(response.into_body(), 4096))
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned())
            .unwrap_or_default();
        eprintln!("pbx-listener tail: the daemon refused: {status} {body}");
        return 1;
    }
    match follow(response.into_body(), args).await {
        Ok(Ended::Count) => 0,
        Ok(Ended::ByServer) => {
            eprintln!("pbx-listener tail: the daemon closed the stream (it is stopping or restarting).");
            1
        }
        Err(e) => {
            eprintln!("pbx-listener tail: {e:#}");
            1
        }
    }
}

enum Ended {
    Count,
    ByServer,
}

/// `?extension=…&pbx=…&status=…`, percent-encoded, or nothing.
fn query(args: &TailArgs) -> String {
    let mut parts = vec![];
    for (key, values) in [("extension", &args.extension), ("pbx", &args.pbx), ("status", &args.status)] {
        if !values.is_empty() {
            parts.push(format!("{key}={}", encode(&values.join(","))));
        }
    }
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reads the stream until the server ends it or `--count` events were printed.
async fn follow(mut body: hyper::body::Incoming, args: &TailArgs) -> anyhow::Result<Ended> {
    let mut parser = SseParser::default();
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    loop {
        if args.count.is_some_and(|n| printed >= n) {
            return Ok(Ended::Count);
        }
        let Some(frame) = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await else {
            return Ok(Ended::ByServer);
        };
        let frame = frame.context("reading the event stream")?;
        let Ok(data) = frame.into_data() else { continue };
        for message in parser.push(&data)? {
            match message.event.as_str() {
                "event" => {
                    if args.count.is_some_and(|n| printed >= n) {
                        break;
                    }
                    let line = match args.format {
                        TailFormat::Json => message.data,
                        TailFormat::Text => readable(&message.data),
                    };
                    let mut out = stdout.lock();
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        // stdout closed (`tail | head`): a normal way to stop.
                        return Ok(Ended::Count);
                    }
                    printed += 1;
                }
                "lagged" => {
                    let missed = serde_json::from_str::<serde_json::Value>(&message.data)
                        .ok()
                        .and_then(|v| v.get("missed").and_then(|m| m.as_u64()))
                        .unwrap_or(0);
                    eprintln!(
                        "pbx-listener tail: missed {missed} event(s): this client read too slowly (the daemon never waits for it)."
                    );
                }
                _ => {}
            }
        }
    }
}

/// One event as a line: time (UTC), PBX, extension, status, from → to, the sids and how
/// they were found.
fn readable(json: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return json.to_owned();
    };
    let s = |key: &str| v.get(key).and_then(|x| x.as_str()).unwrap_or("-").to_owned();
    let meta = |key: &str| v.get("meta").and_then(|m| m.get(key)).and_then(|x| x.as_str()).map(str::to_owned);
    let ms = v.get("timestamp").and_then(|t| t.as_u64()).unwrap_or(0);
    let time = format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000 % 24, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut line = format!(
        "{time} {pbx} ext {ext} {status} {from} -> {to} callSid={call} parentCallSid={parent} correlation={corr}",
        pbx = meta("pbx").unwrap_or_else(|| "-".into()),
        ext = s("extension"),
        status = s("status"),
        from = s("from"),
        to = s("to"),
        call = s("callSid"),
        parent = s("parentCallSid"),
        corr = meta("correlation").unwrap_or_else(|| "-".into()),
    );
    if let Some(reason) = meta("reason") {
        line.push_str(&format!(" reason={reason}"));
    }
    line
}

/// One server-sent message.
#[derive(Debug, Default, PartialEq, Eq)]
struct Message {
    event: String,
    data: String,
}

/// A minimal server-sent events parser (the subset axum sends: `event:`, `data:`, comments,
/// blank-line dispatch), bounded per line.
#[derive(Default)]
struct SseParser {
    line: Vec<u8>,
    current: Message,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> anyhow::Result<Vec<Message>> {
        let mut out = vec![];
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                anyhow::ensure!(self.line.len() <= MAX_LINE, "a server-sent line is longer than {MAX_LINE} bytes");
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                let message = std::mem::take(&mut self.current);
                if !message.data.is_empty() || !message.event.is_empty() {
                    out.push(message);
                }
            } else if let Some(v) = line.strip_prefix("event:") {
                self.current.event = v.trim_start().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !self.current.data.is_empty() {
                    self.current.data.push('\n');
                }
                self.current.data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
            // Comments (`:` keep-alives) and other fields are ignored.
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_splits_messages_across_chunks_and_skips_keep_alives() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: event\ndata: {\"a\"").unwrap().is_empty());
        let got = p.push(b":1}\n\n:\n\nevent: lagged\r\ndata: {\"missed\":3}\r\n\r\n").unwrap();
        assert_eq!(
            got,
            [
                Message { event: "event".into(), data: "{\"a\":1}".into() },
                Message { event: "lagged".into(), data: "{\"missed\":3}".into() },
            ]
        );
        let mut p = SseParser::default();
        assert!(p.push(&vec![b'x'; MAX_LINE + 1]).is_err(), "bounded");
    }

    #[test]
    fn filters_go_in_the_query_string() {
        let args = TailArgs {
            admin: None,
            extension: vec!["201".into(), "202".into()],
            pbx: vec!["head office".into()],
            status: vec![],
            count: None,
            format: TailFormat::Json,
        };
        assert_eq!(query(&args), "?extension=201,202&pbx=head%20office");
        let none = TailArgs { extension: vec![], pbx: vec![], ..args };
        assert_eq!(query(&none), "");
    }

    #[test]
    fn a_readable_line() {
        let json = r#"{"callSid":"c","parentCallSid":null,"status":"disconnected","from":"441","to":"201","extension":"201","meta":{"pbx":"hq","correlation":"none","reason":"hangup"},"timestamp":3723004}"#;
        assert_eq!(
            readable(json),
            "01:02:03.004 hq ext 201 disconnected 441 -> 201 callSid=c parentCallSid=- correlation=none reason=hangup"
        );
    }
}
