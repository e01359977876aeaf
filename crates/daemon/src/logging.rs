//! Logs to stderr with `tracing`: coloured text on a terminal, plain lines with syslog priority
//! prefixes under systemd (journald turns `<3>` into priority "err"), JSON on request.

use std::fmt;
use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::LogFormat;

/// The filter of the installed subscriber, for a reload to change (`None` before `init`, or
/// when `RUST_LOG` set it: the environment wins over the file).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `level` is a filter (`"info"`); `RUST_LOG` overrides it.
pub fn init(format: LogFormat, level: Option<&str>) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let env_wins = from_env.is_some();
    let filter =
        from_env.or_else(|| level.and_then(|l| EnvFilter::try_new(l).ok())).unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    // `JOURNAL_STREAM` is set by systemd when stderr is connected to the journal.
    let under_journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer: Box<dyn Layer<_> + Send + Sync> = match format {
        LogFormat::Json => Box::new(layer.json().flatten_event(true).with_current_span(false)),
        LogFormat::Auto if under_journal => Box::new(layer.event_format(JournalFormat::default())),
        LogFormat::Auto if std::io::stderr().is_terminal() => Box::new(layer.with_ansi(true)),
        LogFormat::Auto | LogFormat::Text => Box::new(layer.with_ansi(false)),
    };
    // A subscriber is already installed (tests): keep it.
    if tracing_subscriber::registry().with(filter).with(layer).try_init().is_ok() && !env_wins {
        let _ = LEVEL.set(handle);
    }
}

/// A reloaded `[log] level`. Does nothing when `RUST_LOG` set the filter.
pub fn set_level(level: Option<&str>) -> Result<(), String> {
    let Some(handle) = LEVEL.get() else { return Ok(()) };
    let filter = EnvFilter::try_new(level.unwrap_or("info")).map_err(|e| e.to_string())?;
    handle.reload(filter).map_err(|e| e.to_string())
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
