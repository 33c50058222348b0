//! `TestApp`: starts the real server in-process on an ephemeral port with its own data directory
//! (and, on PostgreSQL, its own schema), and a client that trusts its certificate.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keyplane_core::records::Organization;
use keyplane_core::values::Role;
use keyplane_core::{OrganizationId, UserId};
use keyplane_server::infra::tls::CertificateInfo;
use keyplane_server::service::bootstrap::BootstrapOutput;
use keyplane_server::{AppState, Application, ServeConfig};
use reqwest::{Certificate, Client as HttpClient, Url};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{OwnedRwLockWriteGuard, RwLock, oneshot};
use tokio::task::{JoinHandle, JoinSet};

pub const TEST_DATABASE_URL: &str = "KEYPLANE_TEST_DATABASE_URL";

/// Runs an async test body once on SQLite and once on PostgreSQL (`<name>::sqlite`,
/// `<name>::postgres`). Without `KEYPLANE_TEST_DATABASE_URL` the PostgreSQL variant is skipped
/// with a printed reason, or fails in CI (see [`skip`]).
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
    /// PostgreSQL when `KEYPLANE_TEST_DATABASE_URL` is set; otherwise the test is skipped with a
    /// printed reason, or fails in CI (see [`skip`]).
    pub fn postgres() -> Option<Self> {
        match std::env::var(TEST_DATABASE_URL) {
            Ok(url) if !url.is_empty() => Some(Backend::Postgres(url)),
            _ => {
                skip(&format!(
                    "set {TEST_DATABASE_URL} to run the PostgreSQL variant of this test"
                ));
                None
            }
        }
    }
}

/// For a test that cannot run here (no database URL, not root): prints why it is skipped.
/// In CI (`CI` set) it panics instead: a CI run must run every test, so a missing database or
/// privilege there is a failure, not a quiet pass.
pub fn skip(reason: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "in CI this test must run: {reason}"
    );
    eprintln!("skipped: {reason}");
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

    /// Uses the PostgreSQL database at `url` (a schema of [`fresh_postgres_schema`], possibly
    /// through a [`DatabaseProxy`]) with a master key of its own.
    pub fn postgres_at(mut self, url: String) -> Self {
        self.config.store.database_url = Some(url);
        self.config.store.master_key = Some(test_master_key());
        self
    }

    pub fn configure(mut self, change: impl FnOnce(&mut ServeConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Starts the server, bootstraps it and logs the bootstrap key in.
    pub async fn bootstrapped(self) -> Fixture {
        let app = self.start().await;
        let boot = app.bootstrap().await;
        let token = app.access_token(&boot.api_key, &boot.api_secret).await;
        Fixture { app, boot, token }
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
        let setup_link = application.setup_link().map(str::to_owned);
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
            setup_link,
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
    pub client: HttpClient,
    pub certificate: CertificateInfo,
    pub state: AppState,
    pub config: ServeConfig,
    /// The console's first-run link, when the store was empty at start.
    pub setup_link: Option<String>,
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
            Default::default(),
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
        token_pair(&self.client, &self.url("/api/v0/auth"), key, secret).await
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

/// `POST /api/v0/auth` with an API key and secret, which must succeed: the token pair.
async fn token_pair(client: &HttpClient, auth_url: &str, key: &str, secret: &str) -> Value {
    let response = client
        .post(auth_url)
        .json(&json!({"api_key": key, "api_secret": secret}))
        .send()
        .await
        .expect("the request completes");
    assert_eq!(response.status(), 200, "logging in with a good key");
    response.json().await.expect("a JSON token pair")
}

/// A started server with the first organization bootstrapped (as `keyplane bootstrap` does:
/// "Test Organization" with `TEST` and `LIVE`, its owner `owner@example.com` invited, and an
/// enabled key named `bootstrap` of role admin), and an access token of that key.
pub struct Fixture {
    pub app: TestApp,
    pub boot: BootstrapOutput,
    /// An access token of the bootstrap key.
    pub token: String,
}

impl Fixture {
    /// On `backend`, with the default configuration; [`TestAppBuilder::bootstrapped`] for others.
    pub async fn start(backend: &Backend) -> Self {
        TestAppBuilder::new(backend).await.bootstrapped().await
    }
}

/// The token of the owner's invitation that bootstrap printed.
pub fn owner_invitation_token(boot: &BootstrapOutput) -> &str {
    boot.invitation_url
        .split_once("#token=")
        .expect("an invitation link with a token")
        .1
}

/// An organization of the test's own, made straight in the store (no caller's rights are
/// involved), with one enabled `test` key named `main` of role admin. From
/// [`TestApp::another_organization`].
pub struct NewOrganization<'a> {
    app: &'a TestApp,
    name: String,
    managed_by: Option<OrganizationId>,
}

impl NewOrganization<'_> {
    /// Managed by `manager` (by default a root organization, managed by nobody).
    pub fn managed_by(mut self, manager: OrganizationId) -> Self {
        self.managed_by = Some(manager);
        self
    }

    pub async fn create(self) -> Client {
        use keyplane_core::api_keys::{NewApiKey, create};
        let now = keyplane_core::time::now_unix();
        let mut organization =
            Organization::named(self.name, vec![keyplane_core::values::Env::Test], now);
        organization.managed_by = self.managed_by;
        let store = self.app.state.store();
        store
            .create_organization(&organization, &[])
            .await
            .expect("storing the organization");
        let (key, secret) = create(
            NewApiKey {
                organization_id: organization.id,
                name: keyplane_core::values::KeyName::parse("main").unwrap(),
                kind: keyplane_core::values::ApiKeyKind::Test,
                status: keyplane_core::values::ApiKeyStatus::Enabled,
                role: Role::Admin,
                metadata: Default::default(),
                expires_at: None,
                created_by_user: None,
            },
            self.app.state.secrets(),
            now,
        );
        store
            .create_api_key(&key, &[])
            .await
            .expect("storing the key");
        Client {
            organization,
            key: key.public_key,
            secret: secret.into_string(),
            http: self.app.client.clone(),
            auth_url: self.app.url("/api/v0/auth"),
        }
    }
}

/// An organization and the credentials of its `main` key: a client of the API.
pub struct Client {
    pub organization: Organization,
    /// The public key (`api_key`, or OAuth `client_id`).
    pub key: String,
    pub secret: String,
    http: HttpClient,
    auth_url: String,
}

impl Client {
    /// A token pair of the key (each call is a login, recorded as `auth.succeeded`).
    pub async fn token_pair(&self) -> Value {
        token_pair(&self.http, &self.auth_url, &self.key, &self.secret).await
    }

    /// An access token of the key (each call is a login, recorded as `auth.succeeded`).
    pub async fn token(&self) -> String {
        self.token_pair().await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }
}

impl TestApp {
    /// Another organization made in the store: `.managed_by(id)` if wanted, then `.create()`.
    pub fn another_organization(&self, name: &str) -> NewOrganization<'_> {
        NewOrganization {
            app: self,
            name: name.to_owned(),
            managed_by: None,
        }
    }

    /// `POST /api/v0/auth` with an email address and a password.
    pub async fn sign_in(&self, email: &str, password: &str) -> reqwest::Response {
        self.post_json(
            "/api/v0/auth",
            &json!({"email": email, "password": password}),
        )
        .await
    }

    /// A person's token pair: signs in, which must succeed.
    pub async fn person_pair(&self, email: &str, password: &str) -> Value {
        ok(self.sign_in(email, password).await).await
    }

    /// A person's access token: signs in, which must succeed.
    pub async fn person_token(&self, email: &str, password: &str) -> String {
        self.person_pair(email, password).await["access_token"]
            .as_str()
            .expect("an access token")
            .to_owned()
    }

    /// `POST /api/v0/invitations/accept` with the invitation's token, a password, and the
    /// fields of `names` (`first_name`, `last_name`; `json!({})` for none).
    pub async fn accept_invitation(
        &self,
        token: &str,
        password: &str,
        names: Value,
    ) -> reqwest::Response {
        let mut body = names;
        body["token"] = json!(token);
        body["password"] = json!(password);
        self.post_json("/api/v0/invitations/accept", &body).await
    }

    /// Gives the bootstrap owner a password and activates the membership straight in the
    /// store, as accepting the invitation would (without a profile, an audit event or a mail).
    pub async fn activate_owner(&self, boot: &BootstrapOutput, password: &str) {
        let store = self.state.store();
        let user_id = boot.user_id.parse().unwrap();
        let hash = self
            .state
            .passwords()
            .hash(password.to_owned())
            .await
            .unwrap();
        store.set_user_password(user_id, &hash).await.unwrap();
        let mut membership = store
            .membership(boot.organization_id.parse().unwrap(), user_id)
            .await
            .unwrap()
            .unwrap();
        membership.status = keyplane_core::values::UserStatus::Active;
        assert!(store.update_membership(&membership, &[]).await.unwrap());
    }

    /// Gives a person a role straight in the store (as an operator's repair would) and drops
    /// this node's cached standing of theirs, so that the next login or bearer check reads it.
    pub async fn set_role_in_store(&self, organization: OrganizationId, user: UserId, role: Role) {
        let store = self.state.store();
        let mut membership = store
            .membership(organization, user)
            .await
            .expect("the store answers")
            .expect("a membership");
        membership.role = role;
        assert!(store.update_membership(&membership, &[]).await.unwrap());
        self.state
            .subjects()
            .forget(
                keyplane_core::tokens::SubjectType::User,
                &user.to_string(),
                organization,
            )
            .await;
    }
}

/// A valid body for creating an organization named `name`.
pub fn venue(name: &str) -> Value {
    json!({"name": name, "address_line1": "Via Vincenzo Monti 10", "zip": "20145", "town": "Milano", "country_code": "ITA"})
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
pub fn client_trusting(certificate: &CertificateInfo) -> HttpClient {
    let root = Certificate::from_der(certificate.chain[0].as_ref()).expect("a DER certificate");
    HttpClient::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(30))
        .build()
        .expect("an HTTPS client")
}

/// Asserts the management API's error body (README, Behaviour: `status_code`, `error`, `code`,
/// `message`, and `request_id` matching the `X-Request-Id` header) and returns it.
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

/// The messages in the data directory's outbox addressed to `email`, oldest first, as a mail
/// client shows them: lettre may write long lines quoted-printable (RFC 2045, section 6.7: `=`
/// and a line break is a soft break, `=XX` a byte), which is undone.
pub fn mails_to(app: &TestApp, email: &str) -> Vec<String> {
    let dir = app.data_dir().join("outbox");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .filter(|text| text.contains(&format!("To: {email}")))
        .map(|text| decode_quoted_printable(&text))
        .collect()
}

/// `message` with any quoted-printable encoding undone.
pub fn decode_quoted_printable(message: &str) -> String {
    if !message.contains("Content-Transfer-Encoding: quoted-printable") {
        return message.to_owned();
    }
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
}

/// The invitation token of the link in a (decoded) message.
pub fn invitation_token_in(message: &str) -> String {
    let start = message.find("#token=").expect("a link with a token") + "#token=".len();
    message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The token of the newest invitation mailed to `email`.
pub fn mailed_invitation_token(app: &TestApp, email: &str) -> String {
    let message = mails_to(app, email)
        .pop()
        .expect("an invitation in the outbox");
    invitation_token_in(&message)
}

/// A TCP proxy in front of PostgreSQL that a test can cut (connections reset, the port closed)
/// and restore, or freeze (nothing forwarded either way while every connection stays open: a
/// network that went silent) and thaw.
pub struct DatabaseProxy {
    pub port: u16,
    target: SocketAddr,
    connections: Option<JoinHandle<()>>,
    /// Held shared while bytes are passed on, and exclusively while frozen.
    gate: Arc<RwLock<()>>,
    frozen: Option<OwnedRwLockWriteGuard<()>>,
}

impl DatabaseProxy {
    /// A proxy to the server that `url` names.
    pub async fn start(url: &str) -> Self {
        let parsed = Url::parse(url).expect("a valid database URL");
        let target = tokio::net::lookup_host((
            parsed.host_str().expect("a database host"),
            parsed.port().unwrap_or(5432),
        ))
        .await
        .expect("the database host resolves")
        .next()
        .expect("an address");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut proxy = Self {
            port: listener.local_addr().unwrap().port(),
            target,
            connections: None,
            gate: Arc::default(),
            frozen: None,
        };
        proxy.serve(listener);
        proxy
    }

    /// `url` through this proxy.
    pub fn url(&self, url: &str) -> String {
        with_port(url, self.port)
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, gate) = (self.target, self.gate.clone());
        self.connections = Some(tokio::spawn(async move {
            let mut pipes = JoinSet::new();
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let gate = gate.clone();
                pipes.spawn(async move {
                    if let Ok(server) = tokio::net::TcpStream::connect(target).await {
                        let (client_read, client_write) = client.into_split();
                        let (server_read, server_write) = server.into_split();
                        tokio::join!(
                            forward(client_read, server_write, &gate),
                            forward(server_read, client_write, &gate),
                        );
                    }
                });
            }
        }));
    }

    /// Closes the port and every open connection (the JoinSet aborts its pipes when dropped).
    pub async fn cut(&mut self) {
        if let Some(task) = self.connections.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn restore(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }

    /// Stops passing bytes on, either way, on every connection; connections stay open and new
    /// ones are accepted, but nothing reaches the other side. Returns once nothing is in
    /// flight: from then on not a byte crosses until [`DatabaseProxy::thaw`].
    pub async fn freeze(&mut self) {
        if self.frozen.is_none() {
            self.frozen = Some(self.gate.clone().write_owned().await);
        }
    }

    /// Passes bytes on again, starting with those held while frozen.
    pub fn thaw(&mut self) {
        self.frozen = None;
    }
}

/// Copies `from` to `to` until either side closes, passing each chunk on only while `gate` is
/// open.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: &RwLock<()>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let _open = gate.read().await;
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
