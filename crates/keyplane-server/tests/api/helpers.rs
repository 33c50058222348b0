//! `TestApp`: starts the real server in-process on an ephemeral port with its own data directory
//! (and, on PostgreSQL, its own schema), and a client that trusts its certificate.

use std::path::Path;
use std::time::Duration;

use keyplane_server::infra::tls::CertificateInfo;
use keyplane_server::service::bootstrap::BootstrapOutput;
use keyplane_server::{AppState, Application, ServeConfig};
use reqwest::{Certificate, Client, Url};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TEST_DATABASE_URL: &str = "KEYPLANE_TEST_DATABASE_URL";

/// Runs an async test body once on SQLite and once on PostgreSQL (`<name>::sqlite`,
/// `<name>::postgres`); the PostgreSQL variant is skipped, with a printed reason, when
/// `KEYPLANE_TEST_DATABASE_URL` is not set.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(backend) = $crate::helpers::Backend::postgres() {
                    super::$name(backend).await
                }
            }
        }
    )+};
}

/// Which store a test runs on.
#[derive(Clone, Debug)]
pub enum Backend {
    Sqlite,
    /// The URL of a database in which each test creates its own schema.
    Postgres(String),
}

impl Backend {
    /// PostgreSQL when `KEYPLANE_TEST_DATABASE_URL` is set; otherwise prints why the test is skipped.
    pub fn postgres() -> Option<Self> {
        match std::env::var(TEST_DATABASE_URL) {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                eprintln!(
                    "skipped: set {TEST_DATABASE_URL} to run the PostgreSQL variant of this test"
                );
                None
            }
        }
    }
}

/// A PostgreSQL schema of its own, so tests never see each other's rows.
pub async fn fresh_postgres_schema(base_url: &str) -> String {
    let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(base_url)
        .await
        .expect("connecting to the test database");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&pool)
        .await
        .expect("creating a test schema");
    pool.close().await;
    with_search_path(base_url, &schema)
}

fn with_search_path(base_url: &str, schema: &str) -> String {
    let mut url = Url::parse(base_url).expect("a valid database URL");
    url.query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"));
    url.to_string()
}

/// The same URL with another port: for pointing a server at a proxy in front of PostgreSQL.
pub fn with_port(url: &str, port: u16) -> String {
    let mut url = Url::parse(url).expect("a valid database URL");
    url.set_port(Some(port)).expect("database URLs take a port");
    url.to_string()
}

/// A master key every test node of one deployment shares.
pub fn test_master_key() -> String {
    keyplane_core::secrets::MasterKey::generate().to_base64()
}

pub struct TestAppBuilder {
    config: ServeConfig,
    /// Removed when the app is dropped, unless the test brought its own directory.
    temporary_dir: Option<TempDir>,
}

impl TestAppBuilder {
    /// A server on `backend`, with a fresh data directory (and schema).
    pub async fn new(backend: &Backend) -> Self {
        let dir = TempDir::new().expect("a temporary directory");
        let mut config = ServeConfig::for_data_dir(dir.path());
        config.store.database_timeout = 1.0;
        if let Backend::Postgres(url) = backend {
            config.store.database_url = Some(fresh_postgres_schema(url).await);
            config.store.master_key = Some(test_master_key());
        }
        Self {
            config,
            temporary_dir: Some(dir),
        }
    }

    /// A second node of `other`'s deployment: same database and master key, its own data
    /// directory. Only meaningful on PostgreSQL.
    pub fn sharing_database_with(mut self, other: &TestApp) -> Self {
        self.config.store.database_url = other.config.store.database_url.clone();
        self.config.store.master_key = other.config.store.master_key.clone();
        self
    }

    /// Reuses a data directory (a restart).
    pub fn data_dir(mut self, path: &Path) -> Self {
        self.config.store.data_dir = path.to_path_buf();
        self.temporary_dir = None;
        self
    }

    pub fn configure(mut self, change: impl FnOnce(&mut ServeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    pub async fn start(self) -> TestApp {
        if std::env::var_os("KEYPLANE_TEST_LOG").is_some() {
            keyplane_server::infra::telemetry::init(
                "debug",
                keyplane_server::config::LogFormat::Text,
            );
        }
        let config = self.config.clone();
        let application = Application::build(self.config)
            .await
            .expect("the server starts");
        let port = application.port();
        let certificate = application.certificate().clone();
        let state = application.state().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(application.run_until_stopped(async {
            let _ = stopped.await;
        }));
        TestApp {
            base_url: format!("https://localhost:{port}"),
            port,
            client: client_trusting(&certificate),
            certificate,
            state,
            config,
            stop: Some(stop),
            task: Some(task),
            _temporary_dir: self.temporary_dir,
        }
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub base_url: String,
    pub port: u16,
    pub client: Client,
    pub certificate: CertificateInfo,
    pub state: AppState,
    pub config: ServeConfig,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    _temporary_dir: Option<TempDir>,
}

impl TestApp {
    pub async fn start(backend: &Backend) -> Self {
        TestAppBuilder::new(backend).await.start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    pub fn data_dir(&self) -> &Path {
        self.config.store.data_dir.as_path()
    }

    /// A URL that opens this app's SQLite database beside it (for plans and direct loads).
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}", self.data_dir().join("keyplane.db").display())
    }

    /// Creates the first organization with its owner and a `test` key, as `keyplane bootstrap` does.
    pub async fn bootstrap(&self) -> BootstrapOutput {
        keyplane_server::service::bootstrap::bootstrap(
            self.state.store(),
            self.state.secrets(),
            "Test Organization",
            "owner@example.com",
            &self.base_url,
        )
        .await
        .expect("bootstrap succeeds on a fresh store")
    }

    /// The stored record of an API key, by its public `key`.
    pub async fn stored_api_key(&self, public_key: &str) -> keyplane_core::records::ApiKey {
        self.state
            .store()
            .api_key_by_public_key(public_key)
            .await
            .expect("the store answers")
            .expect("the key exists")
    }

    pub async fn post_json(&self, path: &str, body: &serde_json::Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("the request completes")
    }

    /// Posts a body as-is, with the given content type: for malformed and oversized requests.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("the request completes")
    }

    /// A token pair for an API key, from `POST /api/v0/auth`.
    pub async fn token_pair(&self, key: &str, secret: &str) -> serde_json::Value {
        let response = self
            .post_json(
                "/api/v0/auth",
                &serde_json::json!({"api_key": key, "api_secret": secret}),
            )
            .await;
        assert_eq!(response.status(), 200, "logging in with a good key");
        response.json().await.expect("a JSON token pair")
    }

    /// An access token for an API key.
    pub async fn access_token(&self, key: &str, secret: &str) -> String {
        self.token_pair(key, secret).await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// A GET with `Authorization: Bearer <token>`.
    pub async fn get_as(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the request completes")
    }

    /// Posts a form (OAuth 2.0 endpoints), optionally with HTTP Basic client credentials.
    pub async fn post_form(
        &self,
        path: &str,
        basic: Option<(&str, &str)>,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send().await.expect("the request completes")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the request completes")
    }

    /// Stops accepting, lets in-flight requests finish, and waits for the server to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server task ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A started server with the first organization bootstrapped, and an access token of its key.
pub async fn setup(backend: &Backend) -> (TestApp, BootstrapOutput, String) {
    let app = TestApp::start(backend).await;
    let boot = app.bootstrap().await;
    let token = app.access_token(&boot.api_key, &boot.api_secret).await;
    (app, boot, token)
}

/// A request with a bearer token and, optionally, a JSON body.
pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.expect("the request completes")
}

/// Asserts a 200 and returns its JSON body.
pub async fn ok(response: reqwest::Response) -> serde_json::Value {
    let status = response.status();
    let body: serde_json::Value = response.json().await.expect("a JSON body");
    assert_eq!(status, 200, "{body}");
    body
}

/// An HTTPS client that trusts exactly the server's certificate.
pub fn client_trusting(certificate: &CertificateInfo) -> Client {
    let root = Certificate::from_der(certificate.chain[0].as_ref()).expect("a DER certificate");
    Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTPS client")
}

/// Asserts the contract's error body and returns it.
pub async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/json; charset=utf-8");
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["status_code"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["request_id"], request_id.as_str(), "{body}");
    body
}

/// The claims of a JWT, decoded from its middle segment (not verified: for reading only).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a compact JWS");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// The token of the newest invitation mailed to `email`, read from the data directory's outbox
/// (lettre may write long lines quoted-printable: soft breaks and `=XX` bytes are undone).
pub fn mailed_invitation_token(app: &TestApp, email: &str) -> String {
    let dir = app.data_dir().join("outbox");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    let message = files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .rfind(|text| text.contains(&format!("To: {email}")))
        .expect("an invitation in the outbox");
    let message = if message.contains("Content-Transfer-Encoding: quoted-printable") {
        let joined = message.replace("=\r\n", "").replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                if let Ok(byte) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                    decoded.push(byte);
                    i += 3;
                    continue;
                }
            }
            decoded.push(bytes[i]);
            i += 1;
        }
        String::from_utf8(decoded).expect("UTF-8 text")
    } else {
        message
    };
    let start = message.find("#token=").expect("a link with a token") + "#token=".len();
    message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
