//! The `keyplane` command: `serve`, `bootstrap` and key management.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory, Parser, Subcommand};
use keyplane_core::secrets::MasterKey;
use keyplane_core::tokens::KEY_PROPAGATION_SECONDS;
use keyplane_server::Application;
use keyplane_server::config::{LogFormat, ServeConfig, StoreConfig, file_settings_as_flags};
use keyplane_server::infra::{signing, telemetry};
use keyplane_server::service::bootstrap::{
    Address, BootstrapError, RecoveryError, bootstrap, recover_owner,
};
use keyplane_server::startup as app;

/// Each request makes many small, short-lived allocations; mimalloc serves them in about half
/// the time glibc's allocator takes (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "keyplane",
    version,
    about = "Organizations, people, API keys and the tokens they buy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTPS API.
    Serve(Box<ServeConfig>),
    /// On an empty store: create the first organization, its owner and a first test API key.
    Bootstrap(Box<BootstrapArgs>),
    /// Manage server keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Operator commands, on the server's host with the store settings.
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Invite a new owner into an organization nobody can sign in to any more; prints the
    /// invitation link once.
    RecoverOwner(Box<RecoverOwnerArgs>),
}

#[derive(Args)]
struct RecoverOwnerArgs {
    #[command(flatten)]
    store: StoreConfig,
    /// The organization's id.
    #[arg(long, value_name = "ID")]
    organization: String,
    /// E-mail address of the person to make owner.
    #[arg(long, value_name = "EMAIL")]
    email: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The URL clients reach the server at, for the invitation link.
    #[arg(
        long,
        env = "KEYPLANE_PUBLIC_URL",
        default_value = "https://localhost:8443",
        value_name = "URL"
    )]
    public_url: String,
}

#[derive(Args)]
struct BootstrapArgs {
    #[command(flatten)]
    store: StoreConfig,
    /// Name of the first organization.
    #[arg(long, value_name = "NAME")]
    organization_name: String,
    /// E-mail address of its owner, who is invited to set a password.
    #[arg(long, value_name = "EMAIL")]
    email: String,
    /// Its street address (optional here; can be set later with PATCH).
    #[arg(long, value_name = "LINE")]
    address: Option<String>,
    /// Its postal code.
    #[arg(long, value_name = "ZIP")]
    zip: Option<String>,
    /// Its town.
    #[arg(long, value_name = "TOWN")]
    town: Option<String>,
    /// Its country, ISO 3166-1 alpha-3 (e.g. DEU).
    #[arg(long, value_name = "CODE")]
    country: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// The URL clients reach the server at, for the invitation link.
    #[arg(
        long,
        env = "KEYPLANE_PUBLIC_URL",
        default_value = "https://localhost:8443",
        value_name = "URL"
    )]
    public_url: String,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a new random master key (base64) for KEYPLANE_MASTER_KEY.
    GenerateMasterKey,
    /// Create a new token signing key. Every node publishes it at once and signs with it from
    /// 10 seconds later; the old key verifies until its last token expires.
    Rotate(Box<StoreConfig>),
}

/// An error and its causes on one line, each cause once: many messages already include their
/// cause, which `{:#}` would print again ("Read-only file system (os error 30): Read-only file
/// system (os error 30)").
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

fn main() -> ExitCode {
    let cli = match parse_with_config_file(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("keyplane: {}", describe(&error));
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("keyplane: {}", describe(&error));
            ExitCode::FAILURE
        }
    }
}

/// Parses the command line, adding settings from `--config FILE` that no flag or environment
/// variable gave.
fn parse_with_config_file(mut args: Vec<OsString>) -> anyhow::Result<Cli> {
    let command = Cli::command();
    if let Ok(matches) = command.clone().try_get_matches_from(&args)
        && let Some((name, sub_matches)) = matches.subcommand()
        && let Some(path) = sub_matches
            .try_get_one::<std::path::PathBuf>("config")
            .ok()
            .flatten()
    {
        let sub_command = command
            .find_subcommand(name)
            .expect("the parsed subcommand exists");
        args.extend(file_settings_as_flags(sub_command, sub_matches, path)?);
    }
    Ok(Cli::parse_from(args))
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(config) => {
            telemetry::init(&config.log, config.log_format);
            let application = Application::build(*config).await?;
            application.run_until_stopped(shutdown_signal()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bootstrap(args) => {
            telemetry::init("warn", LogFormat::Text);
            let (store, secrets) = app::open_store(&args.store).await?;
            let outcome = bootstrap(
                store.as_ref(),
                &secrets,
                &args.organization_name,
                &args.email,
                Address {
                    address_line1: args.address.clone(),
                    zip: args.zip.clone(),
                    town: args.town.clone(),
                    country_code: args.country.clone(),
                },
                &args.public_url,
            )
            .await;
            store.close().await;
            match outcome {
                Ok(output) => print_output(&output, args.json, |output| {
                    println!("Organization  {}", output.organization_id);
                    println!("Owner         {} (invited)", output.user_id);
                    println!("API key       {}", output.api_key);
                    println!("API secret    {}", output.api_secret);
                    println!("Invitation    {}", output.invitation_url);
                    println!();
                    println!("The secret is shown only now: store it safely.");
                }),
                Err(error @ (BootstrapError::AlreadyBootstrapped | BootstrapError::Invalid(_))) => {
                    eprintln!("keyplane bootstrap: {error}");
                    Ok(ExitCode::FAILURE)
                }
                Err(BootstrapError::Store(error)) => Err(error).context("bootstrap failed"),
            }
        }
        Command::Keys(KeysCommand::Rotate(config)) => {
            telemetry::init("warn", LogFormat::Text);
            let (store, secrets) = app::open_store(&config).await?;
            let rotated = signing::rotate(store.as_ref(), &secrets).await;
            store.close().await;
            match rotated.context("rotating the signing key")? {
                Some(kid) => {
                    println!(
                        "New signing key {kid}: published now, signing in {KEY_PROPAGATION_SECONDS} s."
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!(
                        "keyplane keys rotate: another rotation happened at the same moment; \
                         nothing changed"
                    );
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Admin(AdminCommand::RecoverOwner(args)) => {
            telemetry::init("warn", LogFormat::Text);
            let (store, secrets) = app::open_store(&args.store).await?;
            let outcome = recover_owner(
                store.as_ref(),
                &secrets,
                &args.organization,
                &args.email,
                &args.public_url,
            )
            .await;
            store.close().await;
            match outcome {
                Ok(output) => print_output(&output, args.json, |output| {
                    println!("Organization  {}", output.organization_id);
                    println!("Owner         {} (invited)", output.user_id);
                    println!("Invitation    {}", output.invitation_url);
                }),
                Err(error @ (RecoveryError::Invalid(_) | RecoveryError::OrganizationNotFound)) => {
                    eprintln!("keyplane admin recover-owner: {error}");
                    Ok(ExitCode::FAILURE)
                }
                Err(RecoveryError::Store(error)) => Err(error).context("recover-owner failed"),
            }
        }
        Command::Keys(KeysCommand::GenerateMasterKey) => {
            println!("{}", MasterKey::generate().to_base64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints what an operator command made: one JSON object with `--json`, else as `text` says.
fn print_output<T: serde::Serialize>(
    output: &T,
    json: bool,
    text: impl FnOnce(&T),
) -> anyhow::Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::to_string(output).context("rendering JSON")?
        );
    } else {
        text(output);
    }
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}
