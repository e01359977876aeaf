//! Logs to stderr with `tracing`: coloured text on a terminal, plain lines with syslog priority
//! prefixes under systemd (journald turns `<3>` into priority "err"), JSON on request.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// Installs the global subscriber. `level` is a filter (`"info"`); `RUST_LOG` overrides it.
pub fn init(format: LogFormat, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| level.and_then(|l| EnvFilter::try_new(l).ok()))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // `JOURNAL_STREAM` is set by systemd when stderr is connected to the journal.
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Auto if under_journal => builder.event_format(JournalFormat::default()).try_init(),
        LogFormat::Auto if std::io::stderr().is_terminal() => builder.with_ansi(true).try_init(),
        LogFormat::Auto | LogFormat::Text => builder.with_ansi(false).try_init(),
    };
    // A subscriber is already installed (tests): keep it.
    drop(result);
}

/// Plain text without timestamps (the journal adds them) and with `<N>` syslog priorities.
struct JournalFormat {
    inner: Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        JournalFormat { inner: Format::default().without_time().with_ansi(false).with_level(false) }
    }
}

impl<S, N> FormatEvent<S, N> for JournalFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}
