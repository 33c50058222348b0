//! Configuration: flags, `KEYPLANE_*` environment variables and an optional TOML file, in that
//! order of precedence. Every setting is a flag with a documented default, so `--help` is the
//! complete reference; the file may set any of them under the flag's name.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::infra::throttle::ThrottlePolicy;
use clap::parser::ValueSource;
use clap::{Args, ValueEnum};
use ipnet::IpNet;

/// Where data lives and how to reach it; shared by `serve`, `bootstrap` and `keys`.
#[derive(Args, Clone, Debug)]
pub struct StoreConfig {
    /// TOML file with settings, named like the long flags (`listen = "0.0.0.0:8443"`).
    /// Flags and environment variables take precedence over it.
    #[arg(long, env = "KEYPLANE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory for the SQLite database, generated TLS material, server secrets and `outbox/`.
    #[arg(
        long,
        env = "KEYPLANE_DATA_DIR",
        default_value = "./keyplane-data",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// PostgreSQL URL (`postgres://user@host/db`). Without it, SQLite in the data directory.
    #[arg(
        long,
        env = "KEYPLANE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,

    /// Base64 of the 32-byte master key from which the secret pepper and the signing-key
    /// encryption key derive. Required with PostgreSQL (or --master-key-file); with SQLite it is
    /// generated into the data directory when absent.
    #[arg(
        long,
        env = "KEYPLANE_MASTER_KEY",
        value_name = "BASE64",
        hide_env_values = true
    )]
    pub master_key: Option<String>,

    /// File holding the master key (base64), as an alternative to --master-key.
    #[arg(long, env = "KEYPLANE_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Largest number of PostgreSQL connections this node opens.
    #[arg(long, env = "KEYPLANE_DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Seconds a request waits for the database (a connection, a SQLite lock, a PostgreSQL
    /// statement) before it is answered 503.
    #[arg(long, env = "KEYPLANE_DATABASE_TIMEOUT", default_value_t = 3.0)]
    pub database_timeout: f64,

    /// Start a new, empty SQLite database in a data directory that holds the state of an
    /// earlier one (master key, TLS material, outbox) but no database file. Without it, that
    /// refuses to start: the database was most likely deleted or moved by mistake.
    #[arg(long, env = "KEYPLANE_ALLOW_NEW_DATABASE")]
    pub allow_new_database: bool,
}

impl StoreConfig {
    pub fn database_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.database_timeout.max(0.01))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings of `keyplane serve`.
#[derive(Args, Clone, Debug)]
pub struct ServeConfig {
    #[command(flatten)]
    pub store: StoreConfig,

    /// Address and port to listen on for HTTPS.
    #[arg(
        long,
        env = "KEYPLANE_LISTEN",
        default_value = "127.0.0.1:8443",
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// The URL clients reach this server at; used in invitation links and as the token issuer.
    #[arg(
        long,
        env = "KEYPLANE_PUBLIC_URL",
        default_value = "https://localhost:8443",
        value_name = "URL"
    )]
    pub public_url: String,

    /// Extra host names for the generated self-signed certificate (repeatable).
    #[arg(
        long = "hostname",
        env = "KEYPLANE_HOSTNAMES",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub hostnames: Vec<String>,

    /// PEM certificate chain; with --tls-key, replaces the generated self-signed certificate.
    #[arg(
        long,
        env = "KEYPLANE_TLS_CERT",
        requires = "tls_key",
        value_name = "FILE"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(
        long,
        env = "KEYPLANE_TLS_KEY",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_key: Option<PathBuf>,

    /// A TLS-terminating proxy (CIDR, repeatable): its plain-HTTP requests are served when they
    /// carry `X-Forwarded-Proto: https`, and its `X-Forwarded-For` names the client.
    #[arg(
        long = "trusted-proxy",
        env = "KEYPLANE_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<IpNet>,

    /// Who may read `/metrics` (CIDR, repeatable); anyone else gets 404. Loopback by default,
    /// so a scraper on the host (or behind a trusted proxy that names it) reads them and the
    /// internet does not.
    #[arg(
        long = "metrics-allow",
        env = "KEYPLANE_METRICS_ALLOW",
        value_delimiter = ',',
        value_name = "CIDR",
        default_values = ["127.0.0.0/8", "::1/128"]
    )]
    pub metrics_allow: Vec<IpNet>,

    /// Most connections served at once; further ones wait in the kernel's queue until one
    /// closes. 0: as many as the open-file limit allows, less a reserve for the database and
    /// files.
    #[arg(long, env = "KEYPLANE_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,

    /// Seconds a connection may stay open with nothing to do (no request in flight, no byte
    /// sent or received) before it is closed; this also bounds the wait for a first request.
    #[arg(long, env = "KEYPLANE_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub idle_timeout: u64,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "KEYPLANE_ACCESS_TOKEN_TTL", default_value_t = 300, value_parser = clap::value_parser!(i64).range(10..=86_400))]
    pub access_token_ttl: i64,

    /// Lifetime of the access tokens of Fiskil's `POST /v1/token`, in seconds (Fiskil documents
    /// 600).
    #[arg(long, env = "KEYPLANE_FISKIL_TOKEN_TTL", default_value_t = 600, value_parser = clap::value_parser!(i64).range(10..=86_400))]
    pub fiskil_token_ttl: i64,

    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "KEYPLANE_REFRESH_TOKEN_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(60..=31_536_000))]
    pub refresh_token_ttl: i64,

    /// Seconds during which a spent refresh token may be presented again (a client that lost the
    /// response) without revoking its family. Off by default, as RFC 9700 recommends.
    #[arg(long, env = "KEYPLANE_REFRESH_TOKEN_REUSE_GRACE", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..=60))]
    pub refresh_token_reuse_grace: i64,

    /// Seconds after which a new signing key replaces the current one (0: only on
    /// `keyplane keys rotate`). Tokens signed by the old key stay valid until they expire.
    #[arg(long, env = "KEYPLANE_SIGNING_KEY_ROTATION_INTERVAL", default_value_t = 2_592_000, value_parser = clap::value_parser!(i64).range(0..))]
    pub signing_key_rotation_interval: i64,

    /// How long an invitation link works, in seconds (default 7 days).
    #[arg(long, env = "KEYPLANE_INVITATION_TTL", default_value_t = 604_800, value_parser = clap::value_parser!(i64).range(300..=2_592_000))]
    pub invitation_ttl: i64,

    /// Seconds a web console session lasts without a request (default 30 minutes). A session's
    /// last request is recorded at most once a minute, so it may end up to a minute sooner.
    #[arg(long, env = "KEYPLANE_SESSION_IDLE_TIMEOUT", default_value_t = 1_800, value_parser = clap::value_parser!(i64).range(120..=86_400))]
    pub session_idle_timeout: i64,

    /// Seconds a web console session lasts at most, however busy (default 12 hours).
    #[arg(long, env = "KEYPLANE_SESSION_LIFETIME", default_value_t = 43_200, value_parser = clap::value_parser!(i64).range(300..=2_592_000))]
    pub session_lifetime: i64,

    /// How long the answer to a write with an `Idempotency-Key` is kept for retries, in seconds
    /// (default 24 hours).
    #[arg(long, env = "KEYPLANE_IDEMPOTENCY_TTL", default_value_t = 86_400, value_parser = clap::value_parser!(i64).range(60..=604_800))]
    pub idempotency_ttl: i64,

    /// SMTP server for invitation mail: `smtps://user:password@host:465` (TLS) or
    /// `smtp://user:password@host:587?tls=required` (STARTTLS). Without it, messages are written
    /// as `.eml` files to `<data-dir>/outbox/`.
    #[arg(
        long,
        env = "KEYPLANE_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub smtp_url: Option<String>,

    /// Sender of invitation mail.
    #[arg(
        long,
        env = "KEYPLANE_MAIL_FROM",
        default_value = "Keyplane <keyplane@localhost>"
    )]
    pub mail_from: String,

    /// Seconds to let in-flight requests finish after SIGTERM or SIGINT.
    #[arg(long, env = "KEYPLANE_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,

    /// Log filter, in `tracing` syntax (`info`, `keyplane=debug,sqlx=warn`).
    #[arg(long, env = "KEYPLANE_LOG", default_value = "info")]
    pub log: String,

    /// Log line format.
    #[arg(long, env = "KEYPLANE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Failed-authentication throttling (per client address, per credential); embedders and
    /// tests may tighten it, the command line keeps the defaults.
    #[arg(skip = ThrottlePolicies::default())]
    pub throttles: ThrottlePolicies,
}

/// The two throttles of failed authentication.
#[derive(Clone, Copy, Debug)]
pub struct ThrottlePolicies {
    pub by_address: ThrottlePolicy,
    pub by_credential: ThrottlePolicy,
}

impl Default for ThrottlePolicies {
    fn default() -> Self {
        Self {
            by_address: ThrottlePolicy::per_address(),
            by_credential: ThrottlePolicy::per_key(),
        }
    }
}

impl ServeConfig {
    /// A configuration for an in-process server on an ephemeral port: what tests and embedders
    /// start from.
    pub fn for_data_dir(data_dir: &Path) -> Self {
        Self {
            store: StoreConfig {
                config: None,
                data_dir: data_dir.to_path_buf(),
                database_url: None,
                master_key: None,
                master_key_file: None,
                database_max_connections: 16,
                database_timeout: 3.0,
                allow_new_database: false,
            },
            listen: "127.0.0.1:0".parse().expect("valid address"),
            public_url: "https://localhost".into(),
            hostnames: Vec::new(),
            tls_cert: None,
            tls_key: None,
            trusted_proxies: Vec::new(),
            metrics_allow: vec![
                "127.0.0.0/8".parse().expect("valid network"),
                "::1/128".parse().expect("valid network"),
            ],
            max_connections: 0,
            idle_timeout: 60,
            access_token_ttl: 300,
            fiskil_token_ttl: 600,
            refresh_token_ttl: 86_400,
            refresh_token_reuse_grace: 0,
            invitation_ttl: 604_800,
            session_idle_timeout: 1_800,
            session_lifetime: 43_200,
            idempotency_ttl: 86_400,
            smtp_url: None,
            mail_from: "Keyplane <keyplane@localhost>".into(),
            signing_key_rotation_interval: 2_592_000,
            shutdown_timeout: 30,
            log: "info".into(),
            log_format: LogFormat::Text,
            throttles: ThrottlePolicies::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid TOML: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("configuration file {path}: unknown setting `{key}` (see --help)")]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "configuration file {path}: `{key}` must be a string, number, boolean or array of them"
    )]
    BadValue { path: PathBuf, key: String },
}

/// Turns the settings of a TOML file into flags for the settings that neither a flag nor an
/// environment variable gave, so clap applies one set of rules (types, ranges, defaults) to all.
pub fn file_settings_as_flags(
    command: &clap::Command,
    matches: &clap::ArgMatches,
    path: &Path,
) -> Result<Vec<OsString>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigFileError::Parse {
        path: path.to_path_buf(),
        source: Box::new(source),
    })?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let id = key.replace('-', "_");
        let Some(arg) = command
            .get_arguments()
            .find(|a| a.get_id().as_str() == id || a.get_long() == Some(key.as_str()))
        else {
            return Err(ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key,
            });
        };
        if id == "config" {
            continue;
        }
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let long = arg.get_long().expect("every setting has a long flag");
        let values = match value {
            toml::Value::Array(items) => items,
            single => vec![single],
        };
        for item in values {
            let text = match item {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(ConfigFileError::BadValue {
                        path: path.to_path_buf(),
                        key,
                    });
                }
            };
            flags.push(OsString::from(format!("--{long}={text}")));
        }
    }
    Ok(flags)
}
