//! Logging: `tracing` to standard error, as text or JSON lines. Initialised once per process;
//! tests stay silent unless `KEYPLANE_TEST_LOG` is set. Text is coloured only on a terminal:
//! a log file or a collector gets plain lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_new(with_quiet_tls(filter)).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A second call (tests, embedders) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// rustls warns about each client's protocol oddities, such as an IP address sent as the server
/// name (wrk and other clients do this): one line per connection, chosen by the client. Only its
/// errors are logged unless the filter names rustls itself.
fn with_quiet_tls(filter: &str) -> String {
    if filter.contains("rustls") {
        filter.to_owned()
    } else {
        format!("{filter},rustls=error")
    }
}

#[cfg(test)]
mod tests {
    use super::with_quiet_tls;

    #[test]
    fn rustls_warnings_are_off_unless_asked_for() {
        assert_eq!(with_quiet_tls("info"), "info,rustls=error");
        assert_eq!(with_quiet_tls("debug,rustls=warn"), "debug,rustls=warn");
    }
}
