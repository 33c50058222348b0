//! An acknowledged write survives `kill -9`: the real binary on SQLite, killed abruptly.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use crate::helpers::client_trusting;

/// A spawned server, killed when dropped: a failing test must not leave it running (it would
/// hold the test harness's output open and hang the run).
pub struct ServerProcess(Child);

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `keyplane serve` on an ephemeral port and returns it with the port it announced; its
/// log lines (JSON, or text with `text`) go to `log` when given.
fn spawn_server(
    data_dir: &std::path::Path,
    log_level: &str,
    log: Option<Arc<Mutex<String>>>,
) -> (ServerProcess, u16, std::thread::JoinHandle<()>) {
    spawn_server_logging(data_dir, "json", log_level, log)
}

fn spawn_server_logging(
    data_dir: &std::path::Path,
    log_format: &str,
    log_level: &str,
    log: Option<Arc<Mutex<String>>>,
) -> (ServerProcess, u16, std::thread::JoinHandle<()>) {
    spawn_server_with(data_dir, log_format, log_level, &[], None, log)
}

/// [`spawn_server_logging`] with more flags and, with `open_files`, that limit on open file
/// descriptors (`ulimit -n`) for the server alone.
pub fn spawn_server_with(
    data_dir: &std::path::Path,
    log_format: &str,
    log_level: &str,
    flags: &[&str],
    open_files: Option<u32>,
    log: Option<Arc<Mutex<String>>>,
) -> (ServerProcess, u16, std::thread::JoinHandle<()>) {
    let binary = env!("CARGO_BIN_EXE_keyplane");
    let mut command = match open_files {
        Some(limit) => {
            let mut shell = Command::new("bash");
            shell.args([
                "-c",
                &format!("ulimit -n {limit} && exec \"$0\" \"$@\""),
                binary,
            ]);
            shell
        }
        None => Command::new(binary),
    };
    let mut child = command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            log_format,
            "--log",
            log_level,
        ])
        .args(flags)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("KEYPLANE_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let port = loop {
        let line = lines.next().expect("the server logs its address").unwrap();
        if let Some(log) = &log {
            log.lock().unwrap().push_str(&line);
        }
        let address = match serde_json::from_str::<Value>(&line) {
            Ok(entry) if entry["message"] == "listening for HTTPS" => {
                entry["address"].as_str().unwrap().to_owned()
            }
            Err(_) if line.contains("listening for HTTPS") => {
                let (_, rest) = line.split_once("address=").expect("the address is logged");
                rest.split_whitespace().next().unwrap().to_owned()
            }
            _ => continue,
        };
        let address: std::net::SocketAddr = address.parse().unwrap();
        break address.port();
    };
    // Keep draining the log so the server never blocks on a full pipe.
    let drain = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(log) = &log {
                log.lock().unwrap().push_str(&line);
            }
        }
    });
    (ServerProcess(child), port, drain)
}

fn bootstrap(dir: &std::path::Path) -> Value {
    let bootstrap = Command::new(env!("CARGO_BIN_EXE_keyplane"))
        .args([
            "bootstrap",
            "--organization-name",
            "Durable",
            "--email",
            "d@example.com",
            "--json",
            "--data-dir",
        ])
        .arg(dir)
        .env_remove("KEYPLANE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(bootstrap.status.success());
    serde_json::from_slice(&bootstrap.stdout).unwrap()
}

#[tokio::test]
async fn an_acknowledged_refresh_token_survives_kill_9() {
    let dir = tempfile::TempDir::new().unwrap();
    let boot = bootstrap(dir.path());
    let (mut server, port, _) = spawn_server(dir.path(), "info", None);
    let certificate = keyplane_server::infra::tls::load_or_generate(dir.path(), None, &[])
        .unwrap()
        .certificate;
    let client = client_trusting(&certificate);
    let url = |port: u16| format!("https://localhost:{port}/api/v0/auth");
    let pair: Value = client
        .post(url(port))
        .json(&json!({"api_key": boot["api_key"], "api_secret": boot["api_secret"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refresh_token = pair["refresh_token"]
        .as_str()
        .expect("the write was acknowledged")
        .to_owned();

    server.kill().unwrap(); // SIGKILL: no shutdown, no checkpoint.
    server.wait().unwrap();

    let (mut restarted, port, _) = spawn_server(dir.path(), "info", None);
    let response = client
        .post(url(port))
        .json(&json!({"refresh_token": refresh_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "the refresh token stored before the kill is still there"
    );
    restarted.kill().unwrap();
    restarted.wait().unwrap();
}

/// Colour codes belong on a terminal only: a log file or a collector gets plain text.
#[tokio::test]
async fn text_log_lines_to_a_pipe_carry_no_colour_codes() {
    let dir = tempfile::TempDir::new().unwrap();
    bootstrap(dir.path());
    let log = Arc::new(Mutex::new(String::new()));
    let (mut server, _, drain) =
        spawn_server_logging(dir.path(), "text", "info", Some(log.clone()));
    server.kill().unwrap();
    server.wait().unwrap();
    drain.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(
        log.contains("listening for HTTPS address=127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains('\u{1b}'), "{log}");
}

/// The whole token flow with every log line the server writes at `trace`: none of the issued
/// secrets or tokens may appear in them.
#[tokio::test]
async fn no_secret_or_token_appears_in_the_log() {
    let dir = tempfile::TempDir::new().unwrap();
    let boot = bootstrap(dir.path());
    let log = Arc::new(Mutex::new(String::new()));
    let (mut server, port, drain) = spawn_server(dir.path(), "trace", Some(log.clone()));
    let certificate = keyplane_server::infra::tls::load_or_generate(dir.path(), None, &[])
        .unwrap()
        .certificate;
    let client = client_trusting(&certificate);
    let url = |path: &str| format!("https://localhost:{port}{path}");
    let post = |path: &'static str, body: Value| {
        let request = client.post(url(path)).json(&body);
        async move { request.send().await.unwrap() }
    };

    let mut credentials = vec![
        boot["api_secret"].as_str().unwrap().to_owned(),
        boot["invitation_url"]
            .as_str()
            .unwrap()
            .split_once("#token=")
            .unwrap()
            .1
            .to_owned(),
    ];
    let pair: Value = post(
        "/api/v0/auth",
        json!({"api_key": boot["api_key"], "api_secret": boot["api_secret"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    let refreshed: Value = post(
        "/api/v0/auth",
        json!({"refresh_token": pair["refresh_token"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        post(
            "/api/v0/auth",
            json!({"refresh_token": pair["refresh_token"]})
        )
        .await
        .status(),
        401
    );
    assert_eq!(
        post(
            "/api/v0/auth",
            json!({"api_key": boot["api_key"], "api_secret": "wrong-secret-value"})
        )
        .await
        .status(),
        401
    );
    let fiskil: Value = post(
        "/v1/token",
        json!({"client_id": boot["api_key"], "client_secret": boot["api_secret"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    // OAuth 2.0: client credentials by Basic, then introspection, a bearer call, revocation,
    // and a password login that fails.
    let key = boot["api_key"].as_str().unwrap();
    let secret = boot["api_secret"].as_str().unwrap();
    let form = |path: &'static str, fields: Vec<(&'static str, String)>| {
        let request = client
            .post(url(path))
            .basic_auth(key, Some(secret))
            .form(&fields);
        async move { request.send().await.unwrap() }
    };
    let oauth: Value = form(
        "/oauth2/token",
        vec![("grant_type", "client_credentials".into())],
    )
    .await
    .json()
    .await
    .unwrap();
    let oauth_token = oauth["access_token"].as_str().unwrap().to_owned();
    let introspection = form("/oauth2/introspect", vec![("token", oauth_token.clone())]).await;
    assert_eq!(
        introspection.status(),
        200,
        "{:?}",
        introspection.text().await
    );
    let organization = client
        .get(url(&format!(
            "/api/v0/organizations/{}",
            boot["organization_id"].as_str().unwrap()
        )))
        .bearer_auth(&oauth_token)
        .send()
        .await
        .unwrap();
    assert_eq!(organization.status(), 200);
    let revoked = form(
        "/oauth2/revoke",
        vec![(
            "token",
            refreshed["refresh_token"].as_str().unwrap().to_owned(),
        )],
    )
    .await;
    assert_eq!(revoked.status(), 200, "{:?}", revoked.text().await);
    let password = post(
        "/api/v0/auth",
        json!({"email": "owner@example.com", "password": "a-password-never-logged"}),
    )
    .await;
    assert_eq!(password.status(), 401);
    credentials.push("a-password-never-logged".to_owned());

    for value in [
        &pair["access_token"],
        &pair["refresh_token"],
        &refreshed["access_token"],
        &refreshed["refresh_token"],
        &fiskil["token"],
        &oauth["access_token"],
    ] {
        credentials.push(value.as_str().expect("issued").to_owned());
    }
    credentials.push("wrong-secret-value".to_owned());

    server.kill().unwrap();
    server.wait().unwrap();
    // The pipe closes with the process: every line it wrote has been read.
    drain.join().unwrap();
    let log = log.lock().unwrap().clone();
    assert!(log.contains("request"), "the log was captured");
    for credential in &credentials {
        // Tokens are long; even a recognisable fragment must not be there.
        let fragment = &credential[..credential.len().min(24)];
        assert!(!log.contains(fragment), "a credential appears in the log");
    }
}
