//! The integration API: one HTTP application for integrators and mailbox users.
//!
//! [`router`] is an axum `Router` written against the ports only ([`Backend`]: the state
//! store with the API's own records, the object store, the mail store), so the `api` Lambda
//! (`functions/api`, through API Gateway's HTTP API and `lambda_http`), the local runner
//! (`pec-runner --api-port`) and the unit tests (memory fakes) serve the same routes.
//!
//! | route | what |
//! |---|---|
//! | `POST /v1/auth/login`, `/refresh`, `/logout` | mailbox users: bearer + refresh tokens |
//! | `POST /v1/messages` | send a PEC (JSON or `message/rfc822`), `Idempotency-Key` |
//! | `GET /v1/messages/{id}` | state per recipient and the evidence list |
//! | `GET /v1/messages/{id}/evidence/{name}` | one receipt: the signed `.eml`, or JSON |
//! | `GET /v1/mailboxes/{address}[/folders[/{folder}/messages[/{uid}[/raw]]]]` | mailboxes |
//! | `GET/PATCH /v1/mailboxes/{address}/settings` | ordinary spam filing, SMS notification of new PEC |
//! | `POST/GET /v1/webhooks`, `GET/DELETE /v1/webhooks/{id}` | webhook subscriptions |
//! | `GET /v1/webhooks/{id}/deliveries`, `POST .../deliveries/{d}/replay` | delivery log, replay |
//! | `GET /v1/plans` | the service sheet |
//! | `GET/POST /v1/mailboxes`, `POST /v1/mailboxes/{address}/plan`, `.../status` | tenant admin: mailboxes, plans, suspend/resume/revoke |
//! | `GET/POST /v1/domains`, `POST /v1/domains/{d}/verify`, `DELETE /v1/domains/{d}` | tenant admin: own domains |
//! | `POST /v1/members/import`, `POST /v1/mailboxes/{address}/activation` | tenant admin: members tables to mailboxes, activation links |
//! | `GET/POST /v1/api-keys`, `POST /v1/api-keys/{id}/rotate`, `DELETE /v1/api-keys/{id}` | tenant admin: API keys |
//! | `GET /v1/openapi.json` | this API's OpenAPI 3.1 document |
//!
//! **Who may do what.** A bearer token is either a mailbox session (`pat_…`, from
//! `/v1/auth/login`: that mailbox only) or a tenant API key (`pec_<id>_<secret>`, made with
//! `pec apikey create`: the tenant's mailboxes, within its scopes). Anything of another tenant
//! or another mailbox answers `404`, exactly as if it did not exist.
//!
//! **Submissions** enter the pipeline exactly as SMTP ones do: `submitted/<id>.eml` (our
//! `Received:` field, then the message) and `submitted/<id>.json` in the raw bucket; the access
//! point cannot tell them apart except by that trace field.
//!
//! Errors are RFC 9457 problem documents (`application/problem+json`), see [`problem`].

pub mod activation;
pub mod admin;
pub mod auth;
pub mod bulk;
mod download;
pub mod keys;
pub mod mailbox;
pub mod members;
pub mod messages;
pub mod openapi;
pub mod organise;
mod password;
pub mod problem;
pub mod send;
pub mod settings;
pub mod uploads;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use pec_ports::QueueSender;
use pec_ports::SignedUrls;
use pec_ports::webhooks::WebhookStore;
use pec_ports::{
    AccessStore, ConfigError, DomainIdentities, Env, LoginThrottle, MailStore, MailTransport,
    MemoryThrottle, ObjectStore, StateStore, ThrottlePolicy,
};

pub use problem::Problem;

/// The API function's logical id in `template.yaml`: its AWS clients are built with this name,
/// so the IAM check attributes its calls to its role.
pub const TEMPLATE_ID: &str = "ApiFunction";

/// Requests per minute per API key or mailbox, unless configured.
pub const DEFAULT_REQUESTS_PER_MINUTE: u32 = 600;

/// Downloads larger than this are redirects to a storage URL, unless configured.
pub const DEFAULT_MAX_INLINE_BYTES: usize = 4 * 1024 * 1024;

/// The stores the API works on.
pub trait Backend: Send + Sync + 'static {
    type State: StateStore + 'static;
    type Access: AccessStore + 'static;
    type Objects: ObjectStore + SignedUrls + 'static;
    type Mail: MailStore + 'static;
    type Hooks: WebhookStore + 'static;
    type Queue: QueueSender + 'static;
    type Identities: DomainIdentities + 'static;
    type Transport: MailTransport + 'static;
    type Jobs: pec_ports::bulk::JobStore + 'static;
    fn state(&self) -> &Self::State;
    fn access(&self) -> &Self::Access;
    fn objects(&self) -> &Self::Objects;
    fn mail(&self) -> &Self::Mail;
    fn hooks(&self) -> &Self::Hooks;
    /// Where webhook replays are queued.
    fn queue(&self) -> &Self::Queue;
    /// The mail service's domain identities (tenants' own domains).
    fn identities(&self) -> &Self::Identities;
    /// Outgoing ordinary mail (members' activation links).
    fn transport(&self) -> &Self::Transport;
    /// Mass-sending jobs.
    fn jobs(&self) -> &Self::Jobs;
}

/// The stores as one [`Backend`] (in AWS, `state`, `access` and `hooks` are the same table).
pub struct Stores<S, A, O, M, W, Q, I, T, J> {
    pub state: S,
    pub access: A,
    pub objects: O,
    pub mail: M,
    pub hooks: W,
    pub queue: Q,
    pub identities: I,
    pub transport: T,
    pub jobs: J,
}

impl<S, A, O, M, W, Q, I, T, J> Backend for Stores<S, A, O, M, W, Q, I, T, J>
where
    S: StateStore + 'static,
    A: AccessStore + 'static,
    O: ObjectStore + SignedUrls + 'static,
    M: MailStore + 'static,
    W: WebhookStore + 'static,
    Q: QueueSender + 'static,
    I: DomainIdentities + 'static,
    T: MailTransport + 'static,
    J: pec_ports::bulk::JobStore + 'static,
{
    type State = S;
    type Access = A;
    type Objects = O;
    type Mail = M;
    type Hooks = W;
    type Queue = Q;
    type Identities = I;
    type Transport = T;
    type Jobs = J;
    fn jobs(&self) -> &J {
        &self.jobs
    }
    fn state(&self) -> &S {
        &self.state
    }
    fn access(&self) -> &A {
        &self.access
    }
    fn objects(&self) -> &O {
        &self.objects
    }
    fn mail(&self) -> &M {
        &self.mail
    }
    fn hooks(&self) -> &W {
        &self.hooks
    }
    fn queue(&self) -> &Q {
        &self.queue
    }
    fn identities(&self) -> &I {
        &self.identities
    }
    fn transport(&self) -> &T {
        &self.transport
    }
}

/// What the API reads from its environment.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `PEC_PROVIDER_DOMAIN`: names our trace fields and Message-IDs.
    pub hostname: String,
    /// `PEC_RAW_BUCKET`: where submissions go.
    pub raw_bucket: String,
    /// `PEC_EVIDENCE_BUCKET`: receipts and notices.
    pub evidence_bucket: String,
    /// `PEC_PROVIDER_INDEX_KEY` / `PEC_TRUST_ANCHORS_KEY` in the evidence bucket: what a
    /// receipt's signature is verified against in its JSON form.
    pub provider_index_key: String,
    pub trust_anchors_key: String,
    /// Lifetime of a bearer token (15 minutes) and of a refresh token (7 days).
    pub access_ttl: chrono::Duration,
    pub refresh_ttl: chrono::Duration,
    /// How long an `Idempotency-Key` is remembered (24 hours).
    pub idempotency_ttl: chrono::Duration,
    /// The largest message accepted, in octets (the PEC limit, 100 MiB). A JSON request may be
    /// a third larger (base64).
    pub max_message_bytes: usize,
    /// The cost of the hash an unknown login name is checked against (it must cost what a
    /// real mailbox's check costs: production; tests use the fast one).
    pub login_cost: pec_submit::HashCost,
    /// `PEC_API_REQUESTS_PER_MINUTE`: requests each API key (and each mailbox's sessions) may
    /// make per minute, counted across every API instance; beyond, `429` with `Retry-After`.
    pub requests_per_minute: u32,
    /// `PEC_API_MAX_INLINE_BYTES`: downloads up to this size are in the answer, larger ones a
    /// redirect to a storage URL (4 MiB: an answer through API Gateway and Lambda carries at
    /// most 6 MB, binary bodies base64-encoded).
    pub max_inline_bytes: usize,
    /// `PEC_WEBHOOK_QUEUE_URL`: where a replayed webhook delivery's first attempt is queued.
    pub webhook_queue_url: String,
    /// `PEC_BULK_QUEUE_URL`: where a mass-sending job's chunks are handed out (`None`: mass
    /// sending over the API answers 503).
    pub bulk_queue_url: Option<String>,
    /// `PEC_WEBHOOK_PRIVATE_TARGETS=allow`: webhook URLs may be `http://` and on internal
    /// addresses (the local profile only).
    pub webhook_private_targets: bool,
    /// `PEC_ACTIVATION_URL`: the page where imported members activate their mailbox (the link
    /// is it + `#` + a one-time token). Without it, members cannot be imported over the API.
    pub activation_url: Option<String>,
    /// `PEC_API_IMPORT_SECONDS`: how long one member-import request works before answering
    /// with what it did (20 s: API Gateway waits 29).
    pub import_budget: std::time::Duration,
}

impl Settings {
    /// From `env`; errors name the missing variable.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Settings {
            hostname: env.required("PEC_PROVIDER_DOMAIN")?,
            raw_bucket: env.required("PEC_RAW_BUCKET")?,
            evidence_bucket: env.required("PEC_EVIDENCE_BUCKET")?,
            provider_index_key: env.or(
                "PEC_PROVIDER_INDEX_KEY",
                pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY,
            ),
            trust_anchors_key: env.or(
                "PEC_TRUST_ANCHORS_KEY",
                pec_ports::keys::DEFAULT_TRUST_ANCHORS_KEY,
            ),
            webhook_queue_url: env.required("PEC_WEBHOOK_QUEUE_URL")?,
            bulk_queue_url: env.optional("PEC_BULK_QUEUE_URL"),
            requests_per_minute: env
                .parse("PEC_API_REQUESTS_PER_MINUTE")?
                .unwrap_or(DEFAULT_REQUESTS_PER_MINUTE),
            max_inline_bytes: env
                .parse("PEC_API_MAX_INLINE_BYTES")?
                .unwrap_or(DEFAULT_MAX_INLINE_BYTES),
            webhook_private_targets: env.or("PEC_WEBHOOK_PRIVATE_TARGETS", "refuse") == "allow",
            activation_url: match env.or("PEC_ACTIVATION_URL", "") {
                u if u.is_empty() => None,
                u if u.starts_with("https://") || u.starts_with("http://127.0.0.1") => Some(u),
                u => {
                    return Err(ConfigError::Malformed {
                        name: "PEC_ACTIVATION_URL".into(),
                        value: u,
                        reason: "not an https:// address (http://127.0.0.1 for local tests)".into(),
                    });
                }
            },
            import_budget: std::time::Duration::from_secs(
                env.parse("PEC_API_IMPORT_SECONDS")?.unwrap_or(20),
            ),
            ..Settings::local("")
        })
    }

    /// Defaults around `hostname`, for tests: buckets `raw`, `evidence`.
    pub fn local(hostname: &str) -> Self {
        Settings {
            hostname: hostname.to_string(),
            raw_bucket: "raw".into(),
            evidence_bucket: "evidence".into(),
            provider_index_key: pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY.into(),
            trust_anchors_key: pec_ports::keys::DEFAULT_TRUST_ANCHORS_KEY.into(),
            access_ttl: chrono::Duration::minutes(15),
            refresh_ttl: chrono::Duration::days(7),
            idempotency_ttl: chrono::Duration::hours(24),
            max_message_bytes: 100 * 1024 * 1024,
            login_cost: pec_submit::HashCost::Production,
            webhook_queue_url: "webhooks".into(),
            bulk_queue_url: Some("bulk".into()),
            requests_per_minute: DEFAULT_REQUESTS_PER_MINUTE,
            max_inline_bytes: DEFAULT_MAX_INLINE_BYTES,
            webhook_private_targets: false,
            activation_url: None,
            import_budget: std::time::Duration::from_secs(20),
        }
    }
}

/// The application: stores, settings, login throttle, clock.
pub struct App<B> {
    pub backend: B,
    pub settings: Settings,
    pub throttle: Arc<dyn LoginThrottle>,
    pub clock: Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>,
    /// Breach data every password set for a protected plan is checked against
    /// (`PEC_BREACH_URL`). Without one configured, such passwords are refused with 503.
    pub breach: Arc<dyn pec_ports::breach::BreachSource>,
}

impl<B: Backend> App<B> {
    /// With the default login throttle (in this process) and the system clock.
    pub fn new(backend: B, settings: Settings) -> Self {
        App {
            backend,
            settings,
            throttle: Arc::new(MemoryThrottle::new(ThrottlePolicy::default())),
            clock: Arc::new(Utc::now),
            breach: Arc::new(NoBreachSource),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        (self.clock)()
    }
}

/// No breach source configured: every check fails closed.
struct NoBreachSource;

impl pec_ports::breach::BreachSource for NoBreachSource {
    fn range<'a>(&'a self, _prefix: &'a str) -> pec_ports::breach::RangeFuture<'a> {
        Box::pin(async {
            Err(pec_ports::breach::BreachError::Unavailable(
                "no breach data source is configured (PEC_BREACH_URL)".into(),
            ))
        })
    }
}

/// Every route of the API over `app`.
pub fn router<B: Backend>(app: Arc<App<B>>) -> Router {
    // Bodies are read through `send::body`, which applies the real limit with a problem
    // document; axum's own default (2 MB) would answer first, in plain text.
    let body_limit = app.settings.max_message_bytes / 3 * 4 + 64 * 1024;
    Router::new()
        .route("/v1/auth/login", post(auth::login::<B>))
        .route("/v1/auth/refresh", post(auth::refresh::<B>))
        .route("/v1/auth/logout", post(auth::logout::<B>))
        .route("/v1/activation", post(activation::activation::<B>))
        .route("/v1/messages", post(send::send::<B>))
        .route("/v1/uploads", post(uploads::create::<B>))
        .route("/v1/messages/{id}", get(messages::status::<B>))
        .route(
            "/v1/messages/{id}/evidence/{*name}",
            get(messages::evidence::<B>),
        )
        .route("/v1/mailboxes/{address}", get(mailbox::mailbox::<B>))
        .route(
            "/v1/mailboxes/{address}/settings",
            get(settings::get_settings::<B>).patch(settings::change_settings::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders",
            get(mailbox::folders::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders/{folder}/messages",
            get(mailbox::list::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}",
            get(mailbox::message::<B>)
                .patch(organise::change_flags::<B>)
                .delete(organise::delete_message::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/raw",
            get(mailbox::raw::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/parts/{index}",
            get(mailbox::part::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/folders/{folder}/messages/{uid}/move",
            post(organise::move_message::<B>),
        )
        .route(
            "/v1/webhooks",
            post(webhooks::create::<B>).get(webhooks::list::<B>),
        )
        .route(
            "/v1/webhooks/{id}",
            get(webhooks::get_one::<B>).delete(webhooks::delete::<B>),
        )
        .route("/v1/webhooks/{id}/ping", post(webhooks::ping::<B>))
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(webhooks::deliveries::<B>),
        )
        .route(
            "/v1/webhooks/{id}/deliveries/{delivery}/replay",
            post(webhooks::replay::<B>),
        )
        .route("/v1/plans", get(admin::plans::<B>))
        .route(
            "/v1/mailboxes",
            get(admin::list_mailboxes::<B>).post(admin::create_mailbox::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/plan",
            post(admin::change_plan::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/status",
            post(admin::change_status::<B>),
        )
        .route(
            "/v1/mailboxes/{address}/activation",
            post(members::resend_activation::<B>),
        )
        .route("/v1/members/import", post(members::import::<B>))
        .route(
            "/v1/domains",
            get(admin::list_domains::<B>).post(admin::add_domain::<B>),
        )
        .route(
            "/v1/domains/{domain}/verify",
            post(admin::verify_domain::<B>),
        )
        .route(
            "/v1/domains/{domain}",
            axum::routing::delete(admin::remove_domain::<B>),
        )
        .route("/v1/api-keys", get(keys::list::<B>).post(keys::create::<B>))
        .route(
            "/v1/api-keys/{id}",
            axum::routing::delete(keys::revoke::<B>),
        )
        .route("/v1/api-keys/{id}/rotate", post(keys::rotate::<B>))
        .route("/v1/bulk-jobs", post(bulk::create::<B>))
        .route("/v1/bulk-jobs/{id}", get(bulk::status::<B>))
        .route("/v1/bulk-jobs/{id}/report", get(bulk::report::<B>))
        .route("/v1/bulk-jobs/{id}/{action}", post(bulk::steer::<B>))
        .route("/v1/openapi.json", get(openapi::document))
        .fallback(problem::no_route)
        .method_not_allowed_fallback(problem::method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .with_state(app)
}

/// 32 random bytes, base64url without padding (43 characters).
pub(crate) fn random_token() -> Result<String, Problem> {
    pec_ports::activation::random_token()
        .map_err(|e| Problem::unavailable(format!("no randomness: {e}")))
}

/// Lower-case hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests;

/// The router over the deployment's DynamoDB table and S3 buckets (feature `aws`): what the
/// api Lambda and the local runner serve.
#[cfg(feature = "aws")]
pub mod aws {
    use std::sync::Arc;

    use pec_aws::{
        AwsClients, DynamoMailStore, DynamoState, S3Store, SesIdentities, SesTransport, SqsSender,
    };
    use pec_ports::{ConfigError, Env};

    use crate::{App, Settings, Stores};

    /// The API's stores in AWS.
    pub type AwsStores = Stores<
        DynamoState,
        DynamoState,
        S3Store,
        DynamoMailStore<S3Store>,
        DynamoState,
        SqsSender,
        SesIdentities,
        SesTransport,
        DynamoState,
    >;

    /// The application over `aws` (clients built for [`crate::TEMPLATE_ID`]), configured from
    /// `env` (`PEC_STATE_TABLE`, `PEC_LOG_TABLE`, `PEC_MAILBOX_BUCKET`, `PEC_BREACH_URL`
    /// (default: the Pwned Passwords range API) and [`Settings`]).
    pub fn app(aws: &AwsClients, env: &Env) -> Result<Arc<App<AwsStores>>, ConfigError> {
        let settings = Settings::from_env(env)?;
        let table = env.required("PEC_STATE_TABLE")?;
        let log_table = env.required("PEC_LOG_TABLE")?;
        let mailbox_bucket = env.required("PEC_MAILBOX_BUCKET")?;
        let state = DynamoState::new(aws.dynamodb.clone(), &table, &log_table);
        let stores = Stores {
            jobs: state.clone(),
            access: state.clone(),
            hooks: state.clone(),
            queue: SqsSender::new(aws.sqs.clone()),
            identities: SesIdentities::new(aws.ses.clone()),
            transport: SesTransport::new(aws.ses.clone()),
            state,
            objects: S3Store::new(aws.s3.clone()),
            mail: DynamoMailStore::new(
                aws.dynamodb.clone(),
                &table,
                S3Store::new(aws.s3.clone()),
                &mailbox_bucket,
            ),
        };
        let breach_url = env.or("PEC_BREACH_URL", pec_aws::breach::DEFAULT_URL);
        let breach =
            pec_aws::breach_source(&breach_url).map_err(|reason| ConfigError::Malformed {
                name: "PEC_BREACH_URL".into(),
                value: breach_url.clone(),
                reason,
            })?;
        let mut app = App::new(stores, settings);
        app.breach = breach;
        Ok(Arc::new(app))
    }
}

/// Sets [`auth::ClientIp`] from the TCP peer (`axum::serve` with
/// `into_make_service_with_connect_info::<SocketAddr>()`): the local runner's host.
pub fn with_peer_address(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            if let Some(axum::extract::ConnectInfo(addr)) = req
                .extensions()
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .cloned()
            {
                req.extensions_mut()
                    .insert(auth::ClientIp(addr.ip().to_canonical().to_string()));
            }
            next.run(req).await
        },
    ))
}
