//! Handler tests over the memory fakes: the router called as a tower service, as API Gateway
//! and the runner call it.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{TimeZone, Utc};
use http_body_util::BodyExt;
use pec_core::plan::Plan;
use pec_ports::access::{AccessStore, Scope};
use pec_ports::webhooks::MemoryWebhooks;
use pec_ports::{
    Mailbox, MemoryAccess, MemoryMailStore, MemoryOutbox, MemoryState, MemoryStore, ObjectStore,
    StateStore,
};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::{App, Settings, Stores, router};

type Mem = Stores<
    MemoryState,
    MemoryAccess,
    MemoryStore,
    MemoryMailStore,
    MemoryWebhooks,
    MemoryOutbox,
    pec_ports::MemoryIdentities,
    MemoryOutbox,
    pec_ports::bulk::MemoryJobs,
>;

struct World {
    app: Arc<App<Mem>>,
    /// API keys: tenant A with every scope, tenant A read-only, tenant B with every scope.
    key_a: String,
    key_a_read: String,
    key_b: String,
    /// Seconds added to the test clock.
    clock: Arc<std::sync::atomic::AtomicI64>,
}

impl World {
    fn advance(&self, seconds: i64) {
        self.clock
            .fetch_add(seconds, std::sync::atomic::Ordering::SeqCst);
    }
}

const A1: &str = "uno@a.pec.test";
const A2: &str = "due@a.pec.test";
const B1: &str = "uno@b.pec.test";
const LOCKED: &str = "bloccata@a.pec.test";
/// A password the fake breach source knows (12,345 times).
const BREACHED: &str = "Password2024!";

async fn world() -> World {
    world_with(crate::DEFAULT_REQUESTS_PER_MINUTE).await
}

async fn world_with(requests_per_minute: u32) -> World {
    world_set(|s| s.requests_per_minute = requests_per_minute).await
}

async fn world_set(configure: impl FnOnce(&mut Settings)) -> World {
    let now = Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap();
    let stores = Stores {
        state: MemoryState::new(),
        access: MemoryAccess::new(),
        objects: MemoryStore::new(),
        mail: MemoryMailStore::new(),
        hooks: MemoryWebhooks::new(),
        queue: MemoryOutbox::default(),
        identities: pec_ports::MemoryIdentities::new(),
        transport: MemoryOutbox::default(),
        jobs: pec_ports::bulk::MemoryJobs::new(),
    };
    let hash = pec_submit::hash_password_with("segreta", pec_submit::HashCost::Fast).unwrap();
    for (address, tenant, locked) in [
        (A1, "a", false),
        (A2, "a", false),
        (B1, "b", false),
        (LOCKED, "a", true),
    ] {
        stores
            .state
            .create_mailbox(&Mailbox {
                address: address.into(),
                tenant: tenant.into(),
                plan: Plan::Base,
                expansions_gb: 0,
                quota_bytes: 1 << 30,
                used_bytes: 0,
                password_hash: hash.clone(),
                locked,
                status: Default::default(),
                member: None,
                status_note: None,
                agreement_accepted_at: None,
                refuse_ordinary: false,
                lock: None,
                ordinary_spam: Default::default(),
                sms: None,
                created_at: now,
            })
            .await
            .unwrap();
        stores.mail.create_mailbox(address, 1 << 30);
    }
    let mut keys = Vec::new();
    for (tenant, scopes) in [
        ("a", Scope::ALL.to_vec()),
        ("a", vec![Scope::Read]),
        ("b", Scope::ALL.to_vec()),
    ] {
        let (shown, key) = crate::auth::new_api_key(tenant, "test", scopes, now).unwrap();
        stores.access.put_api_key(&key).await.unwrap();
        keys.push(shown);
    }
    let mut settings = Settings::local("pec.test");
    settings.login_cost = pec_submit::HashCost::Fast;
    settings.max_message_bytes = 64 * 1024;
    configure(&mut settings);
    let mut app = App::new(stores, settings);
    app.breach = Arc::new(pec_ports::breach::MemoryBreach::new().with(BREACHED, 12_345));
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let offset = Arc::clone(&clock);
    app.clock = Arc::new(move || {
        now + chrono::Duration::seconds(offset.load(std::sync::atomic::Ordering::SeqCst))
    });
    World {
        app: Arc::new(app),
        key_a: keys[0].clone(),
        key_a_read: keys[1].clone(),
        key_b: keys[2].clone(),
        clock,
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// A problem document with this type slug.
    fn problem(&self, status: StatusCode, slug: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.content_type, "application/problem+json");
        assert_eq!(
            self.json()["type"],
            format!("urn:pec:problem:{slug}"),
            "{}",
            self.json()
        );
        assert_eq!(self.json()["status"], status.as_u16());
    }
}

async fn call(
    w: &World,
    method: Method,
    uri: &str,
    auth: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> Answer {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(a) = auth {
        r = r.header("authorization", format!("Bearer {a}"));
    }
    if let Some(c) = ct {
        r = r.header("content-type", c);
    }
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let response = router(Arc::clone(&w.app))
        .oneshot(r.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Answer {
        status,
        content_type,
        body,
    }
}

/// Tenant records for `ids` (the world has mailboxes and keys of tenants `a` and `b` only).
async fn put_tenants(w: &World, ids: &[&str]) {
    for t in ids {
        w.app
            .backend
            .state
            .put_tenant(&pec_ports::Tenant {
                id: t.to_string(),
                name: t.to_string(),
                billing: Default::default(),
            })
            .await
            .unwrap();
    }
}

async fn get(w: &World, uri: &str, auth: &str) -> Answer {
    call(w, Method::GET, uri, Some(auth), None, Vec::new(), &[]).await
}

async fn post_json(w: &World, uri: &str, auth: Option<&str>, body: Value) -> Answer {
    call(
        w,
        Method::POST,
        uri,
        auth,
        Some("application/json"),
        serde_json::to_vec(&body).unwrap(),
        &[],
    )
    .await
}

async fn login(w: &World, address: &str) -> Value {
    let a = post_json(
        w,
        "/v1/auth/login",
        None,
        json!({"address": address, "password": "segreta"}),
    )
    .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    a.json()
}

fn simple(from: &str) -> Value {
    json!({"from": from, "to": ["dest@altro.test"], "subject": "Prova", "text": "Testo"})
}

#[tokio::test]
async fn login_refresh_logout() {
    let w = world().await;
    let t = login(&w, "UNO@a.pec.test").await;
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["expires_in"], 900);
    let access = t["access_token"].as_str().unwrap();
    assert!(access.starts_with("pat_") && access.len() == 47);
    assert_eq!(
        get(&w, &format!("/v1/mailboxes/{A1}"), access).await.status,
        StatusCode::OK
    );

    // Refresh: a new pair; the old refresh token and the old access token stop working.
    let refresh = t["refresh_token"].as_str().unwrap();
    let r = post_json(
        &w,
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    post_json(
        &w,
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh}),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    get(&w, &format!("/v1/mailboxes/{A1}"), access)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");

    // Logout revokes the access token and its refresh token.
    let access2 = r.json()["access_token"].as_str().unwrap().to_string();
    let refresh2 = r.json()["refresh_token"].as_str().unwrap().to_string();
    let out = call(
        &w,
        Method::POST,
        "/v1/auth/logout",
        Some(&access2),
        None,
        vec![],
        &[],
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    get(&w, &format!("/v1/mailboxes/{A1}"), &access2)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    post_json(
        &w,
        "/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn bad_logins() {
    let w = world().await;
    let wrong = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": A1, "password": "no"}),
    )
    .await;
    wrong.problem(StatusCode::UNAUTHORIZED, "unauthorized");
    let unknown = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": "chi@a.pec.test", "password": "segreta"}),
    )
    .await;
    // Unknown and wrong look the same.
    assert_eq!(unknown.body, wrong.body);
    post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": LOCKED, "password": "segreta"}),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "mailbox-locked");
    post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": A1, "password": "segreta", "otp": 1}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    call(
        &w,
        Method::POST,
        "/v1/auth/login",
        None,
        Some("application/json"),
        b"{\"address\":".to_vec(),
        &[],
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "malformed-json");
    call(
        &w,
        Method::POST,
        "/v1/auth/login",
        None,
        Some("text/plain"),
        b"x".to_vec(),
        &[],
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    // Ten failures from one source lock the pair.
    for _ in 0..10 {
        post_json(
            &w,
            "/v1/auth/login",
            None,
            json!({"address": A2, "password": "no"}),
        )
        .await;
    }
    let locked = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": A2, "password": "segreta"}),
    )
    .await;
    locked.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    assert!(locked.json()["retry_after"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn credentials_are_checked() {
    let w = world().await;
    let url = format!("/v1/mailboxes/{A1}");
    call(&w, Method::GET, &url, None, None, vec![], &[])
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    for bad in [
        "pat_nope",
        "pec_0123456789abcdef_nope",
        "pec_short_x",
        "basic",
        &w.key_a[..w.key_a.len() - 1],
    ] {
        get(&w, &url, bad)
            .await
            .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(get(&w, &url, &w.key_a).await.status, StatusCode::OK);
    // A revoked key stops working.
    let id = &w.key_a[4..20];
    assert!(
        w.app
            .backend
            .access
            .revoke_api_key("a", id, Utc::now())
            .await
            .unwrap()
    );
    get(&w, &url, &w.key_a)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    // Another tenant cannot revoke it.
    let id_b = &w.key_b[4..20];
    assert!(
        !w.app
            .backend
            .access
            .revoke_api_key("a", id_b, Utc::now())
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn send_json_enters_the_raw_bucket_like_smtp() {
    let w = world().await;
    let t = login(&w, A1).await;
    let token = t["access_token"].as_str().unwrap();
    let a = post_json(&w, "/v1/messages", Some(token), json!({
        "to": ["Dest@Altro.test"], "cc": ["copia@altro.test"], "subject": "Fattura è pronta",
        "text": "In allegato.", "receipt": "breve",
        "attachments": [{"filename": "f.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjcKJeLjz9M="}]
    })).await;
    assert_eq!(
        a.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let id = a.json()["id"].as_str().unwrap().to_string();
    assert_eq!(
        a.json()["recipients"],
        json!(["dest@altro.test", "copia@altro.test"])
    );
    let objects = &w.app.backend.objects;
    let env = objects
        .get("raw", &format!("submitted/{id}.json"))
        .await
        .unwrap()
        .unwrap();
    let env = pec_core::submission::SubmissionEnvelope::from_json(&env).unwrap();
    assert_eq!(
        (
            env.user.as_str(),
            env.tenant.as_str(),
            env.reverse_path.as_str()
        ),
        (A1, "a", A1)
    );
    let eml = objects
        .get("raw", &format!("submitted/{id}.eml"))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&eml);
    assert!(
        text.starts_with("Received: from [unknown]\r\n\tby pec.test with HTTPS id "),
        "{text}"
    );
    assert!(text.contains("X-TipoRicevuta: breve\r\n"), "{text}");
    assert!(
        text.contains(&format!("Message-ID: <{id}@pec.test>")),
        "{text}"
    );
    let parsed = mail_parser::MessageParser::default()
        .parse(&eml[..])
        .unwrap();
    assert_eq!(parsed.subject(), Some("Fattura è pronta"));
    assert_eq!(
        parsed.attachment(0).unwrap().contents(),
        b"%PDF-1.7\n%\xe2\xe3\xcf\xd3"
    );
    // Its status before the access point has seen it.
    let s = get(&w, &format!("/v1/messages/{id}"), token).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json()["state"], "submitted");
    assert_eq!(s.json()["recipients"][0]["state"], "pending");
}

#[tokio::test]
async fn send_raw_and_idempotency() {
    let w = world().await;
    let raw =
        format!("From: Uno <{A1}>\nTo: x@altro.test\nSubject: grezzo\n\ncorpo\n").into_bytes();
    let send = |key: &'static str, body: Vec<u8>| {
        let w = &w;
        async move {
            call(
                w,
                Method::POST,
                "/v1/messages",
                Some(&w.key_a),
                Some("message/rfc822"),
                body,
                &[("idempotency-key", key)],
            )
            .await
        }
    };
    let first = send("k-1", raw.clone()).await;
    assert_eq!(
        first.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&first.body)
    );
    assert_eq!(first.json()["replayed"], false);
    let again = send("k-1", raw.clone()).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.json()["id"], first.json()["id"]);
    assert_eq!(again.json()["replayed"], true);
    let mut other = raw.clone();
    other.extend_from_slice(b"altro\n");
    send("k-1", other)
        .await
        .problem(StatusCode::CONFLICT, "idempotency-key-reused");
    // One submission announced for the key.
    let envelopes = w
        .app
        .backend
        .objects
        .list_keys("raw", "submitted/")
        .await
        .unwrap();
    assert_eq!(
        envelopes.iter().filter(|k| k.ends_with(".json")).count(),
        1,
        "{envelopes:?}"
    );
    // The same key of another tenant is another key.
    let b = call(
        &w,
        Method::POST,
        "/v1/messages",
        Some(&w.key_b),
        Some("message/rfc822"),
        format!("From: {B1}\r\nTo: x@altro.test\r\nSubject: s\r\n\r\nb\r\n").into_bytes(),
        &[("idempotency-key", "k-1")],
    )
    .await;
    assert_eq!(b.status, StatusCode::ACCEPTED);
    assert_ne!(b.json()["id"], first.json()["id"]);
}

#[tokio::test]
async fn bad_submissions_are_refused_precisely_and_leave_nothing() {
    let w = world().await;
    let k = w.key_a.clone();
    let post = |body: Value| {
        let w = &w;
        let k = k.clone();
        async move { post_json(w, "/v1/messages", Some(&k), body).await }
    };
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"to": ["x@y.it"], "subject": "s", "text": "t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/from",
        ),
        (
            json!({"from": A1, "to": ["not an address"], "subject": "s", "text": "t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/to/0",
        ),
        (
            json!({"from": A1, "to": [], "subject": "s", "text": "t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/to",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "a\r\nBcc: spia@z.it", "text": "t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/subject",
        ),
        (
            json!({"from": A1, "from_name": "Uno\nBcc: x@z.it", "to": ["x@y.it"], "subject": "s", "text": "t"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/from_name",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "s", "text": "t", "bcc": ["x@z.it"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "s", "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content": "TVqQAAM="}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/attachments/0/content_type",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "s", "attachments": [{"filename": "a.txt", "content_type": "text/plain", "content": "%%%"}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/attachments/0/content",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "s", "attachments": [{"filename": "../a.txt", "content_type": "text", "content": ""}]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-request",
            "/attachments/0/filename",
        ),
        (
            json!({"from": B1, "to": ["x@y.it"], "subject": "s", "text": "t"}),
            StatusCode::NOT_FOUND,
            "not-found",
            "",
        ),
        (
            json!({"from": LOCKED, "to": ["x@y.it"], "subject": "s", "text": "t"}),
            StatusCode::FORBIDDEN,
            "mailbox-locked",
            "",
        ),
        (
            json!({"from": A1, "to": ["x@y.it"], "subject": "s", "text": "x".repeat(70 * 1024)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-large",
            "",
        ),
    ];
    for (body, status, slug, pointer) in cases {
        let a = post(body.clone()).await;
        a.problem(status, slug);
        if !pointer.is_empty() {
            let pointers: Vec<String> = a.json()["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["pointer"].as_str().unwrap().to_string())
                .collect();
            assert!(
                pointers.iter().any(|p| p.starts_with(pointer)),
                "{body}: {pointers:?}"
            );
        }
    }
    let forged = format!(
        "Received: from x by mx.pec.test; Thu, 1 Jan 2026 00:00:00 +0000\r\nFrom: {A1}\r\nTo: x@y.it\r\nSubject: s\r\n\r\nb\r\n"
    );
    call(
        &w,
        Method::POST,
        "/v1/messages",
        Some(&k),
        Some("message/rfc822"),
        forged.into_bytes(),
        &[],
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    // A read-only key cannot send.
    post_json(&w, "/v1/messages", Some(&w.key_a_read), simple(A1))
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    call(
        &w,
        Method::POST,
        "/v1/messages",
        Some(&k),
        Some("text/csv"),
        b"a,b".to_vec(),
        &[],
    )
    .await
    .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    assert!(
        w.app
            .backend
            .objects
            .list_keys("raw", "")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_mailbox_user_sends_only_as_themselves() {
    let w = world().await;
    let t = login(&w, A1).await;
    let token = t["access_token"].as_str().unwrap();
    post_json(&w, "/v1/messages", Some(token), simple(A2))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(
        post_json(&w, "/v1/messages", Some(token), simple(A1))
            .await
            .status,
        StatusCode::ACCEPTED
    );
}

/// Every route, with another tenant's key and another mailbox's token: 404, as if absent.
#[tokio::test]
async fn isolation_on_every_route() {
    let w = world().await;
    let sent = post_json(&w, "/v1/messages", Some(&w.key_a), simple(A1)).await;
    let id = sent.json()["id"].as_str().unwrap().to_string();
    // Evidence for it, and a message in A1's INBOX.
    w.app
        .backend
        .objects
        .put_if_absent(
            "evidence",
            &format!("signed/msg/{id}/accettazione.eml"),
            b"x".to_vec(),
            "message/rfc822",
        )
        .await
        .unwrap();
    use pec_ports::MailStore;
    w.app
        .backend
        .mail
        .append(
            A1,
            "INBOX",
            b"Subject: s\r\n\r\nb\r\n".to_vec(),
            Default::default(),
            Utc::now(),
            pec_ports::mailstore::Origin::Delivered,
        )
        .await
        .unwrap();
    let routes = [
        format!("/v1/messages/{id}"),
        format!("/v1/messages/{id}/evidence/accettazione.eml"),
        format!("/v1/mailboxes/{A1}"),
        format!("/v1/mailboxes/{A1}/folders"),
        format!("/v1/mailboxes/{A1}/folders/INBOX/messages"),
        format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1"),
        format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1/raw"),
        format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1/parts/0"),
    ];
    let other_user = login(&w, A2).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let owner = login(&w, A1).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for route in &routes {
        assert_eq!(
            get(&w, route, &w.key_a).await.status,
            StatusCode::OK,
            "{route}"
        );
        assert_eq!(
            get(&w, route, &w.key_a_read).await.status,
            StatusCode::OK,
            "{route}"
        );
        assert_eq!(
            get(&w, route, &owner).await.status,
            StatusCode::OK,
            "{route}"
        );
        get(&w, route, &w.key_b)
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
        get(&w, route, &other_user)
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    // The writing routes: refused for the other tenant and the other mailbox, nothing changed.
    let m1 = format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1");
    for who in [&w.key_b, &other_user] {
        let flag = call(
            &w,
            Method::PATCH,
            &m1,
            Some(who),
            Some("application/json"),
            br#"{"add":["\\Seen"]}"#.to_vec(),
            &[],
        )
        .await;
        flag.problem(StatusCode::NOT_FOUND, "not-found");
        post_json(&w, &format!("{m1}/move"), Some(who), json!({"to": "Trash"}))
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
        call(&w, Method::DELETE, &m1, Some(who), None, Vec::new(), &[])
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    let still = get(&w, &m1, &owner).await.json();
    assert_eq!(still["flags"], json!([]));
    let missing = get(
        &w,
        "/v1/messages/20261205T100000000Z-0000000000000000",
        &w.key_a,
    )
    .await;
    let foreign = get(&w, &format!("/v1/messages/{id}"), &w.key_b).await;
    assert_eq!(missing.json()["title"], foreign.json()["title"]);
}

#[tokio::test]
async fn mailbox_listing_pages_newest_first() {
    let w = world().await;
    use pec_ports::MailStore;
    for i in 1..=5 {
        let m = format!("From: m{i}@x.it\r\nSubject: numero {i}\r\n\r\nb\r\n");
        w.app
            .backend
            .mail
            .append(
                A1,
                "INBOX",
                m.into_bytes(),
                Default::default(),
                Utc::now(),
                pec_ports::mailstore::Origin::Delivered,
            )
            .await
            .unwrap();
    }
    let base = format!("/v1/mailboxes/{A1}/folders/INBOX/messages");
    let p1 = get(&w, &format!("{base}?limit=2"), &w.key_a).await.json();
    let subjects = |p: &Value| {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["subject"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(subjects(&p1), ["numero 5", "numero 4"]);
    let c = p1["next_cursor"].as_str().unwrap();
    let p2 = get(&w, &format!("{base}?limit=2&cursor={c}"), &w.key_a)
        .await
        .json();
    assert_eq!(subjects(&p2), ["numero 3", "numero 2"]);
    let c = p2["next_cursor"].as_str().unwrap();
    let p3 = get(&w, &format!("{base}?limit=2&cursor={c}"), &w.key_a)
        .await
        .json();
    assert_eq!(subjects(&p3), ["numero 1"]);
    assert!(p3.get("next_cursor").is_none());
    get(&w, &format!("{base}?cursor=zzz"), &w.key_a)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-cursor");
    get(&w, &format!("{base}?limit=0"), &w.key_a)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-limit");
    get(
        &w,
        &format!("/v1/mailboxes/{A1}/folders/Nope/messages"),
        &w.key_a,
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    let raw = get(&w, &format!("{base}/3/raw"), &w.key_a).await;
    assert_eq!(raw.content_type, "message/rfc822");
    assert_eq!(raw.body, b"From: m3@x.it\r\nSubject: numero 3\r\n\r\nb\r\n");
    let info = get(&w, &format!("/v1/mailboxes/{A1}"), &w.key_a)
        .await
        .json();
    assert_eq!(info["plan"], "base");
    assert!(info["used_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problems() {
    let w = world().await;
    get(&w, "/v2/nothing", &w.key_a)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    call(
        &w,
        Method::DELETE,
        "/v1/messages",
        Some(&w.key_a),
        None,
        vec![],
        &[],
    )
    .await
    .problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed");
}

/// The committed OpenAPI document is the one the code generates.
#[test]
fn openapi_document_is_committed() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let generated = crate::openapi::document_json();
    if std::env::var_os("PEC_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json differs from the code's document: run PEC_UPDATE_OPENAPI=1 cargo test -p pec-api openapi and commit it"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
}

/// Receipts another provider sent and virus notices are listed with their kinds and
/// downloadable; a virus makes every recipient final.
#[tokio::test]
async fn evidence_of_other_providers_and_viruses() {
    let w = world().await;
    let put = |key: String| {
        let w = &w;
        async move {
            w.app
                .backend
                .objects
                .put_if_absent(
                    "evidence",
                    &key,
                    b"Subject: r\r\n\r\nx\r\n".to_vec(),
                    "message/rfc822",
                )
                .await
                .unwrap();
        }
    };
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), simple(A1)).await;
    let id = a.json()["id"].as_str().unwrap().to_string();
    put(format!("received/msg/{id}/in-1.eml")).await;
    put(format!("signed/msg/{id}/consegna/dest@altro.test.eml")).await;
    let s = get(&w, &format!("/v1/messages/{id}"), &w.key_a)
        .await
        .json();
    let ev = s["evidence"].as_array().unwrap();
    let kinds: Vec<(&str, &str)> = ev
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("received/in-1.eml", "received")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("consegna/dest@altro.test.eml", "avvenuta-consegna")),
        "{kinds:?}"
    );
    let one = ev
        .iter()
        .find(|e| e["kind"] == "avvenuta-consegna")
        .unwrap();
    assert_eq!(one["recipient"], "dest@altro.test");
    let dl = get(
        &w,
        &format!("/v1/messages/{id}/evidence/received/in-1.eml"),
        &w.key_a,
    )
    .await;
    assert_eq!(dl.status, StatusCode::OK);
    assert_eq!(dl.content_type, "message/rfc822");
    get(
        &w,
        &format!("/v1/messages/{id}/evidence/received/in-2.eml"),
        &w.key_a,
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    get(
        &w,
        &format!("/v1/messages/{id}/evidence/received/in-1.eml?format=pdf"),
        &w.key_a,
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "unknown-format");
    // A virus notice.
    put(format!(
        "signed/scan/submitted/{id}.eml/non-accettazione-virus.eml"
    ))
    .await;
    let s = get(&w, &format!("/v1/messages/{id}"), &w.key_a)
        .await
        .json();
    assert_eq!(s["state"], "virus");
    assert_eq!(s["recipients"][0]["state"], "virus");
    assert_eq!(s["recipients"][0]["final"], true);
    let v = get(
        &w,
        &format!("/v1/messages/{id}/evidence/scan/non-accettazione-virus.eml"),
        &w.key_a,
    )
    .await;
    assert_eq!(v.status, StatusCode::OK);
    // As JSON: the trust configuration is missing here, so the signature is not checked.
    let j = get(
        &w,
        &format!("/v1/messages/{id}/evidence/scan/non-accettazione-virus.eml?format=json"),
        &w.key_a,
    )
    .await
    .json();
    assert_eq!(j["signature"]["verdict"], "not-checked");
    assert_eq!(j["sha256"].as_str().unwrap().len(), 64);
}

#[tokio::test]
async fn webhooks_subscribe_list_log_replay_and_delete() {
    use pec_ports::webhooks::{Delivery, DeliveryStatus, WebhookStore};
    let w = world().await;
    // Only a tenant key with the webhooks scope manages them.
    let s = login(&w, A1).await;
    let token = s["access_token"].as_str().unwrap();
    let hook = json!({"url": "https://erp.example.it/pec"});
    post_json(&w, "/v1/webhooks", Some(token), hook.clone())
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    post_json(&w, "/v1/webhooks", Some(&w.key_a_read), hook.clone())
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    // Bad URLs and event types, each named.
    for (body, pointer) in [
        (json!({"url": "http://erp.example.it/pec"}), "/url"),
        (json!({"url": "https://127.0.0.1/x"}), "/url"),
        (json!({"url": "https://169.254.169.254/latest"}), "/url"),
        (json!({"url": "https://user:pw@erp.example.it/"}), "/url"),
        (
            json!({"url": "https://erp.example.it/", "events": []}),
            "/events",
        ),
        (
            json!({"url": "https://erp.example.it/", "events": ["pec.message.delivered", "pec.nope"]}),
            "/events/1",
        ),
    ] {
        let a = post_json(&w, "/v1/webhooks", Some(&w.key_a), body.clone()).await;
        a.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
        assert_eq!(a.json()["errors"][0]["pointer"], pointer, "{body}");
    }
    // Created: the secret once, then never again.
    let a = post_json(
        &w,
        "/v1/webhooks",
        Some(&w.key_a),
        json!({"url": "https://erp.example.it/pec", "events": ["pec.message.delivered", "pec.message.delivered"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.json());
    let created = a.json();
    let id = created["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("wh_"));
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(created["events"], json!(["pec.message.delivered"]));
    let listed = get(&w, "/v1/webhooks", &w.key_a).await.json();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 1);
    assert!(listed["webhooks"][0].get("secret").is_none());
    let one = get(&w, &format!("/v1/webhooks/{id}"), &w.key_a)
        .await
        .json();
    assert_eq!(one["url"], "https://erp.example.it/pec");
    assert!(one.get("secret").is_none());
    // Another tenant sees nothing of it.
    assert!(
        get(&w, "/v1/webhooks", &w.key_b).await.json()["webhooks"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    for uri in [
        format!("/v1/webhooks/{id}"),
        format!("/v1/webhooks/{id}/deliveries"),
    ] {
        get(&w, &uri, &w.key_b)
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    // A test ping: a delivery of its own, queued, whatever the subscription's events.
    post_json(
        &w,
        &format!("/v1/webhooks/{id}/ping"),
        Some(&w.key_b),
        json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    let ping = post_json(
        &w,
        &format!("/v1/webhooks/{id}/ping"),
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert_eq!(ping.status, StatusCode::ACCEPTED, "{}", ping.json());
    let ping = ping.json();
    assert_eq!(ping["event_type"], "pec.webhook.test");
    assert_eq!(ping["status"], "pending");
    let queued = w.app.backend.queue.take("webhooks");
    assert_eq!(queued.len(), 1);
    assert!(
        queued[0].contains(ping["id"].as_str().unwrap()),
        "{queued:?}"
    );
    let stored = w
        .app
        .backend
        .hooks
        .delivery(ping["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let payload: Value = serde_json::from_str(&stored.payload).unwrap();
    assert_eq!(payload["type"], "pec.webhook.test");
    assert_eq!(payload["data"]["webhook"], id.as_str());
    call(
        &w,
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        Some(&w.key_b),
        None,
        vec![],
        &[],
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    // A parked delivery is listed with its attempts and replayed once.
    let hooks = &w.app.backend.hooks;
    let now = (w.app.clock)();
    let parked = Delivery {
        id: "msg_0123".into(),
        subscription: id.clone(),
        tenant: "a".into(),
        event_id: "ev1".into(),
        event_type: "pec.message.delivered".into(),
        payload: "{}".into(),
        status: DeliveryStatus::Pending,
        attempts: 0,
        log: vec![],
        next_attempt_at: Some(now),
        created_at: now,
        started_at: None,
    };
    hooks.create_delivery(&parked).await.unwrap();
    assert!(matches!(
        hooks.start_attempt("msg_0123", 1, now, now).await.unwrap(),
        pec_ports::webhooks::Start::Started(_)
    ));
    let failed = pec_ports::webhooks::Attempt {
        at: now,
        status: Some(503),
        error: Some("HTTP 503".into()),
        duration_ms: 12,
    };
    hooks
        .finish_attempt("msg_0123", 1, now, &failed, DeliveryStatus::Parked, None)
        .await
        .unwrap();
    let log = get(&w, &format!("/v1/webhooks/{id}/deliveries"), &w.key_a)
        .await
        .json();
    // The test ping's delivery is there too.
    assert_eq!(log["deliveries"].as_array().unwrap().len(), 2);
    let parked = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "msg_0123")
        .unwrap();
    assert_eq!(parked["status"], "parked");
    assert_eq!(parked["log"][0]["status"], 503);
    get(
        &w,
        &format!("/v1/webhooks/{id}/deliveries?limit=0"),
        &w.key_a,
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "bad-limit");
    let replay = format!("/v1/webhooks/{id}/deliveries/msg_0123/replay");
    post_json(&w, &replay, Some(&w.key_b), json!({}))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let a = post_json(&w, &replay, Some(&w.key_a), json!({})).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    assert_eq!(a.json()["status"], "pending");
    let queued = w.app.backend.queue.take("webhooks");
    assert_eq!(queued.len(), 1);
    assert!(
        queued[0].contains("\"delivery\":\"msg_0123\""),
        "{queued:?}"
    );
    // Once delivered it is no longer replayable.
    assert!(matches!(
        hooks.start_attempt("msg_0123", 1, now, now).await.unwrap(),
        pec_ports::webhooks::Start::Started(_)
    ));
    let ok = pec_ports::webhooks::Attempt {
        at: now,
        status: Some(204),
        error: None,
        duration_ms: 3,
    };
    hooks
        .finish_attempt("msg_0123", 1, now, &ok, DeliveryStatus::Delivered, None)
        .await
        .unwrap();
    post_json(&w, &replay, Some(&w.key_a), json!({}))
        .await
        .problem(StatusCode::CONFLICT, "not-parked");
    // Deleted: gone.
    let a = call(
        &w,
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        Some(&w.key_a),
        None,
        vec![],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    get(&w, &format!("/v1/webhooks/{id}"), &w.key_a)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn webhooks_are_limited_per_tenant() {
    let w = world().await;
    for _ in 0..crate::webhooks::MAX_SUBSCRIPTIONS {
        let a = post_json(
            &w,
            "/v1/webhooks",
            Some(&w.key_b),
            json!({"url": "https://x.example/h"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::CREATED);
    }
    post_json(
        &w,
        "/v1/webhooks",
        Some(&w.key_b),
        json!({"url": "https://x.example/h"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "too-many-webhooks");
}

#[tokio::test]
async fn each_credential_has_its_own_rate_limit() {
    let w = world_with(3).await;
    let uri = format!("/v1/mailboxes/{A1}");
    for _ in 0..3 {
        assert_eq!(get(&w, &uri, &w.key_a).await.status, StatusCode::OK);
    }
    let a = get(&w, &uri, &w.key_a).await;
    a.problem(StatusCode::TOO_MANY_REQUESTS, "rate-limited");
    // The clock stands at 10:00:00: the window ends in 60 s.
    assert_eq!(a.json()["retry_after"], 60);
    // Another key, and a mailbox session, count on their own.
    assert_eq!(get(&w, &uri, &w.key_a_read).await.status, StatusCode::OK);
    let s = login(&w, A1).await;
    let token = s["access_token"].as_str().unwrap().to_string();
    assert_eq!(get(&w, &uri, &token).await.status, StatusCode::OK);
    // Unauthenticated requests are not counted against anyone (and fail first).
    call(
        &w,
        Method::GET,
        &uri,
        Some("pec_0123456789abcdef_nope"),
        None,
        vec![],
        &[],
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn mailbox_search_filters_and_pages_through_what_it_examined() {
    let w = world().await;
    use pec_ports::MailStore;
    let t0 = Utc.with_ymd_and_hms(2026, 12, 1, 9, 0, 0).unwrap();
    for i in 1..=(crate::mailbox::SEARCH_SCAN as u32 + 20) {
        let from = if i % 100 == 7 {
            "Studio.Rossi@pec.it"
        } else {
            "altri@x.it"
        };
        let m = format!("From: {from}\r\nSubject: Fattura {i}\r\n\r\nb\r\n");
        w.app
            .backend
            .mail
            .append(
                A1,
                "INBOX",
                m.into_bytes(),
                Default::default(),
                t0 + chrono::Duration::hours(i64::from(i)),
                pec_ports::mailstore::Origin::Delivered,
            )
            .await
            .unwrap();
    }
    let base = format!("/v1/mailboxes/{A1}/folders/INBOX/messages");
    let uids = |p: &Value| {
        p["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["uid"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    // Sender, case-insensitive: 507, 407, 307, 207, 107, 7 - but one page examines at most 500
    // messages (520 down to 21), then gives a cursor to go on from.
    let p = get(&w, &format!("{base}?from=studio.rossi&limit=100"), &w.key_a)
        .await
        .json();
    assert_eq!(uids(&p), [507, 407, 307, 207, 107]);
    let c = p["next_cursor"].as_str().unwrap().to_string();
    assert!(c.ends_with(".21"), "{c}");
    let p = get(
        &w,
        &format!("{base}?from=studio.rossi&cursor={c}"),
        &w.key_a,
    )
    .await
    .json();
    assert_eq!(uids(&p), [7]);
    assert!(p.get("next_cursor").is_none());
    // Subject and a date range (received 1 Dec 09:00 + uid hours).
    let since = (t0 + chrono::Duration::hours(10)).to_rfc3339();
    let before = (t0 + chrono::Duration::hours(13)).to_rfc3339();
    let q = format!(
        "{base}?subject=FATTURA%201&since={}&before={}",
        since.replace('+', "%2B"),
        before.replace('+', "%2B")
    );
    assert_eq!(uids(&get(&w, &q, &w.key_a).await.json()), [12, 11, 10]);
    // Kind: these are all ordinary mail.
    let p = get(&w, &format!("{base}?kind=accettazione"), &w.key_a)
        .await
        .json();
    assert!(uids(&p).is_empty());
    assert!(p["next_cursor"].is_string());
    assert_eq!(
        uids(
            &get(&w, &format!("{base}?kind=ordinaria&limit=2"), &w.key_a)
                .await
                .json()
        ),
        [520, 519]
    );
    get(&w, &format!("{base}?kind=nope"), &w.key_a)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-query");
    get(&w, &format!("{base}?subject={}", "x".repeat(901)), &w.key_a)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-query");
    get(&w, &format!("{base}?since=ieri"), &w.key_a)
        .await
        .problem(StatusCode::BAD_REQUEST, "bad-query");
}

#[tokio::test]
async fn flags_move_delete_and_part_downloads() {
    let w = world().await;
    use pec_ports::MailStore;
    let message = concat!(
        "From: m@x.it\r\nSubject: allegati\r\nMIME-Version: 1.0\r\n",
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n",
        "--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nCorpo\r\n",
        "--b\r\nContent-Type: text/html\r\n",
        "Content-Disposition: attachment; filename=\"fattura città.html\"\r\n",
        "Content-Transfer-Encoding: base64\r\n\r\nPHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\r\n",
        "--b--\r\n"
    );
    w.app
        .backend
        .mail
        .append(
            A1,
            "INBOX",
            message.as_bytes().to_vec(),
            Default::default(),
            Utc::now(),
            pec_ports::mailstore::Origin::Delivered,
        )
        .await
        .unwrap();
    let m1 = format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1");
    let patch = |body: Value, auth: String| {
        let w = &w;
        let m1 = m1.clone();
        async move {
            call(
                w,
                Method::PATCH,
                &m1,
                Some(&auth),
                Some("application/json"),
                serde_json::to_vec(&body).unwrap(),
                &[],
            )
            .await
        }
    };
    // Parts: listed with links, downloaded decoded, never rendered as the API.
    let data = get(&w, &m1, &w.key_a_read).await.json();
    let parts = data["parts"].as_array().unwrap();
    let html = parts
        .iter()
        .find(|p| p["content_type"] == "text/html")
        .unwrap();
    assert_eq!(html["filename"], "fattura città.html");
    let href = html["href"].as_str().unwrap();
    let r = call(
        &w,
        Method::GET,
        href,
        Some(&w.key_a_read),
        None,
        vec![],
        &[],
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"<script>alert(1)</script>");
    assert_eq!(r.content_type, "text/html");
    let full = router(Arc::clone(&w.app))
        .oneshot(
            Request::builder()
                .uri(href)
                .header("authorization", format!("Bearer {}", w.key_a_read))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let h = |n: &str| full.headers()[n].to_str().unwrap().to_string();
    assert_eq!(
        h("content-disposition"),
        "attachment; filename=\"fattura_citt_.html\"; filename*=UTF-8''fattura%20citt%C3%A0%2Ehtml"
    );
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert!(h("content-security-policy").starts_with("sandbox"));
    for bad in ["99", "0", "x", "-1"] {
        get(&w, &format!("{m1}/parts/{bad}"), &w.key_a_read)
            .await
            .problem(StatusCode::NOT_FOUND, "not-found");
    }
    // Flags: canonical, added and removed; a read key suffices; bad flags are named.
    let a = patch(
        json!({"add": ["\\seen", "Protocollato"]}),
        w.key_a_read.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json());
    assert_eq!(a.json()["flags"], json!(["Protocollato", "\\Seen"]));
    let a = patch(json!({"remove": ["Protocollato"]}), w.key_a.clone()).await;
    assert_eq!(a.json()["flags"], json!(["\\Seen"]));
    let bad = patch(
        json!({"add": ["\\Recent", "due parole"], "remove": ["\\Seen"]}),
        w.key_a.clone(),
    )
    .await;
    bad.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let problem = bad.json();
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/add/0", "/add/1"]);
    patch(
        json!({"add": ["\\Seen"], "remove": ["\\Seen"]}),
        w.key_a.clone(),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    patch(json!({"add": [], "colour": "red"}), w.key_a.clone())
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    // Move: to another folder, with its new UID; to itself or nowhere refused.
    post_json(
        &w,
        &format!("{m1}/move"),
        Some(&w.key_a),
        json!({"to": "inbox"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "same-folder");
    post_json(
        &w,
        &format!("{m1}/move"),
        Some(&w.key_a),
        json!({"to": "Nope"}),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    let moved = post_json(
        &w,
        &format!("{m1}/move"),
        Some(&w.key_a),
        json!({"to": "Trash"}),
    )
    .await;
    assert_eq!(moved.status, StatusCode::OK, "{}", moved.json());
    let to = moved.json();
    assert_eq!(to["folder"], "Trash");
    let href = to["href"].as_str().unwrap().to_string();
    assert_eq!(
        get(&w, &href, &w.key_a).await.json()["flags"],
        json!(["\\Seen"])
    );
    get(&w, &m1, &w.key_a)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    // Delete: gone for good, and the quota freed.
    let info = format!("/v1/mailboxes/{A1}");
    let used = get(&w, &info, &w.key_a).await.json()["used_bytes"].clone();
    assert_eq!(used, message.len());
    let d = call(&w, Method::DELETE, &href, Some(&w.key_a), None, vec![], &[]).await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    assert_eq!(get(&w, &info, &w.key_a).await.json()["used_bytes"], 0);
    call(&w, Method::DELETE, &href, Some(&w.key_a), None, vec![], &[])
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
}

#[tokio::test]
async fn large_attachments_go_through_an_upload() {
    let w = world().await;
    let objects = &w.app.backend.objects;
    let pdf = [b"%PDF-1.7\n".as_slice(), &[7u8; 40_000]].concat();
    let ask = |size: usize, ct: &str, key: &str| {
        let (w, ct, key) = (&w, ct.to_string(), key.to_string());
        async move {
            post_json(
                w,
                "/v1/uploads",
                Some(&key),
                json!({"content_type": ct, "size": size}),
            )
            .await
        }
    };
    // Refused: a read-only key, an empty file, a bad type, more than a PEC may carry.
    ask(10, "application/pdf", &w.key_a_read)
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    ask(0, "application/pdf", &w.key_a)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    ask(10, "pdf", &w.key_a)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    ask(64 * 1024 + 1, "application/pdf", &w.key_a)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let made = ask(pdf.len(), "Application/PDF", &w.key_a).await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
    let up = made.json();
    let id = up["id"].as_str().unwrap().to_string();
    assert_eq!(up["method"], "PUT");
    assert_eq!(up["headers"]["content-type"], "application/pdf");
    let url = up["upload_url"].as_str().unwrap();
    assert_eq!(url, format!("memory://raw/uploads/a/{id}"));
    let message = |attachment: Value| {
        json!({"from": A1, "to": ["dest@altro.test"], "subject": "Allegato grande",
               "attachments": [attachment]})
    };
    let with_upload =
        message(json!({"filename": "atto.pdf", "content_type": "application/pdf", "upload": id}));
    let pointer = |a: &Answer| {
        a.json()["errors"][0]["pointer"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", a.json()))
            .to_string()
    };
    // Not PUT yet.
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), with_upload.clone()).await;
    a.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_eq!(pointer(&a), "/attachments/0/upload");
    assert!(
        a.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("no file yet")
    );
    // The client's PUT (here: straight into the store); the wrong size first.
    objects.insert("raw", &format!("uploads/a/{id}"), pdf[..100].to_vec());
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), with_upload.clone()).await;
    assert!(
        a.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("announced"),
        "{}",
        a.json()
    );
    objects.insert("raw", &format!("uploads/a/{id}"), pdf.clone());
    // Another tenant cannot name it; content and upload together are refused.
    let foreign = json!({"from": B1, "to": ["dest@altro.test"], "subject": "x",
        "attachments": [{"filename": "atto.pdf", "content_type": "application/pdf", "upload": id}]});
    let a = post_json(&w, "/v1/messages", Some(&w.key_b), foreign).await;
    assert!(
        a.json()["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("no upload"),
        "{}",
        a.json()
    );
    let both = message(
        json!({"filename": "a.pdf", "content_type": "application/pdf",
        "upload": id, "content": "JVBERi0xLjcK"}),
    );
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), both).await;
    assert_eq!(pointer(&a), "/attachments/0/content");
    // A forged type is caught on the uploaded bytes too.
    let forged = message(json!({"filename": "a.png", "content_type": "image/png", "upload": id}));
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), forged).await;
    assert_eq!(pointer(&a), "/attachments/0/content_type");
    // Sent: the file is in the message, byte for byte.
    let a = post_json(&w, "/v1/messages", Some(&w.key_a), with_upload).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.json());
    let sid = a.json()["id"].as_str().unwrap().to_string();
    let eml = objects
        .get("raw", &format!("submitted/{sid}.eml"))
        .await
        .unwrap()
        .unwrap();
    let parsed = mail_parser::MessageParser::default()
        .parse(&eml[..])
        .unwrap();
    assert_eq!(parsed.attachment(0).unwrap().contents(), &pdf[..]);
    assert_eq!(
        mail_parser::MimeHeaders::attachment_name(parsed.attachment(0).unwrap()),
        Some("atto.pdf")
    );
}

#[tokio::test]
async fn large_downloads_are_redirects_to_storage() {
    let mut w = world().await;
    Arc::get_mut(&mut w.app).unwrap().settings.max_inline_bytes = 1000;
    use pec_ports::MailStore;
    let big = format!(
        "From: m@x.it\r\nSubject: grande\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\ncorpo\r\n--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"dati.bin\"\r\n\r\n{}\r\n--b--\r\n",
        "x".repeat(3000)
    );
    w.app
        .backend
        .mail
        .append(
            A1,
            "INBOX",
            big.clone().into_bytes(),
            Default::default(),
            Utc::now(),
            pec_ports::mailstore::Origin::Delivered,
        )
        .await
        .unwrap();
    let m1 = format!("/v1/mailboxes/{A1}/folders/INBOX/messages/1");
    let location = |uri: String| {
        let w = &w;
        async move {
            let r = router(Arc::clone(&w.app))
                .oneshot(
                    Request::builder()
                        .uri(uri)
                        .header("authorization", format!("Bearer {}", w.key_a))
                        .body(Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
            assert_eq!(r.headers()["cache-control"], "no-store");
            r.headers()["location"].to_str().unwrap().to_string()
        }
    };
    // The raw message: copied under the tenant's downloads/, content-addressed.
    let raw = location(format!("{m1}/raw")).await;
    let key = raw.strip_prefix("memory://raw/").unwrap();
    assert!(key.starts_with("downloads/a/"), "{key}");
    assert_eq!(
        w.app.backend.objects.object("raw", key).unwrap(),
        big.as_bytes()
    );
    assert_eq!(location(format!("{m1}/raw")).await, raw);
    // A decoded part likewise.
    let data = get(&w, &m1, &w.key_a).await.json();
    let part = data["parts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["filename"] == "dati.bin")
        .unwrap()
        .clone();
    let url = location(part["href"].as_str().unwrap().to_string()).await;
    let key = url.strip_prefix("memory://raw/").unwrap();
    assert_eq!(
        w.app.backend.objects.object("raw", key).unwrap(),
        "x".repeat(3000).as_bytes()
    );
    // Small ones stay inline.
    let small = get(&w, &format!("{m1}/parts/1"), &w.key_a).await;
    assert_eq!(small.status, StatusCode::OK);
    assert_eq!(small.body, b"corpo");
}

#[tokio::test]
async fn activation_links_set_the_password_once() {
    use pec_ports::{ActivationRecord, MailboxStatus};
    let w = world().await;
    let state = &w.app.backend.state;
    let now = w.app.now();
    let address = "nuovo.socio@pec.test";
    state
        .create_mailbox(&Mailbox {
            address: address.into(),
            tenant: "a".into(),
            plan: Plan::Pro,
            expansions_gb: 0,
            quota_bytes: 1 << 30,
            used_bytes: 0,
            password_hash: pec_ports::activation::NOT_ACTIVATED.into(),
            locked: false,
            status: MailboxStatus::Pending,
            member: None,
            status_note: None,
            agreement_accepted_at: None,
            refuse_ordinary: false,
            lock: None,
            ordinary_spam: Default::default(),
            sms: None,
            created_at: now,
        })
        .await
        .unwrap();
    let token = "tok-0123456789abcdefghijklmnopqrstuv";
    state
        .put_activation(&ActivationRecord {
            token_hash: pec_ports::activation::token_hash(token),
            address: address.into(),
            tenant: "a".into(),
            agreement: true,
            reset_for: None,
            expires_at: now + chrono::Duration::days(7),
        })
        .await
        .unwrap();
    let body = |password: &str, accept: bool| json!({"token": token, "password": password, "accept_agreement": accept});
    // Before activation no password logs in.
    let before = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": address, "password": "!not-activated"}),
    )
    .await;
    assert_eq!(before.status, StatusCode::UNAUTHORIZED);
    post_json(&w, "/v1/activation", None, body("corta", true))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let no = post_json(
        &w,
        "/v1/activation",
        None,
        body("una-password-lunga", false),
    )
    .await;
    no.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert_eq!(no.json()["errors"][0]["pointer"], "/accept_agreement");
    // Pro includes password protection: a breached password is refused, and the link works on.
    let breached = post_json(&w, "/v1/activation", None, body(BREACHED, true)).await;
    breached.problem(StatusCode::UNPROCESSABLE_ENTITY, "password-breached");
    assert_eq!(breached.json()["errors"][0]["pointer"], "/password");
    let found = state
        .password_findings(now - chrono::Duration::days(1), now)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].mailbox, address);
    assert_eq!(found[0].setting, pec_core::breach::Setting::Activation);
    let ok = post_json(&w, "/v1/activation", None, body("una-password-lunga", true)).await;
    assert_eq!(
        ok.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&ok.body)
    );
    assert_eq!(ok.json()["address"], address);
    let m = state.mailbox(address).await.unwrap().unwrap();
    assert_eq!(m.status, MailboxStatus::Active);
    let logged = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": address, "password": "una-password-lunga"}),
    )
    .await;
    assert_eq!(logged.status, StatusCode::OK);
    post_json(&w, "/v1/activation", None, body("un-altra-password", true))
        .await
        .problem(StatusCode::GONE, "activation-invalid");
    post_json(
        &w,
        "/v1/activation",
        None,
        json!({"token": "x", "password": "una-password-lunga", "extra": 1}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
}

/// Password protection where an administrator sets a password: a breached one is refused for
/// a plan that includes the check (422, recorded), accepted for one that does not (Base), and
/// with the breach source down the protected mailbox is not created (503, fail closed).
#[tokio::test]
async fn breached_passwords_are_refused_when_a_mailbox_is_created() {
    let mut w = world().await;
    w.app
        .backend
        .state
        .put_tenant(&pec_ports::Tenant {
            id: "a".into(),
            name: "Ordine A".into(),
            billing: Default::default(),
        })
        .await
        .unwrap();
    let create = |address: &str, plan: &str, password: &str| json!({"address": address, "plan": plan, "password": password});
    let refused = post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        create("gold@pec.test", "gold", BREACHED),
    )
    .await;
    refused.problem(StatusCode::UNPROCESSABLE_ENTITY, "password-breached");
    let detail = refused.json()["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        detail.contains("10 to 999 times") || detail.contains("1000 times or more"),
        "{detail}"
    );
    assert!(
        !detail.contains("12345") && !detail.contains("12,345"),
        "never the exact count"
    );
    assert!(
        w.app
            .backend
            .state
            .mailbox("gold@pec.test")
            .await
            .unwrap()
            .is_none()
    );
    let now = w.app.now();
    let found = w
        .app
        .backend
        .state
        .password_findings(now - chrono::Duration::days(1), now)
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        (
            found[0].mailbox.as_str(),
            found[0].tenant.as_str(),
            found[0].setting
        ),
        ("gold@pec.test", "a", pec_core::breach::Setting::AdminCreate)
    );
    let base = post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        create("base@pec.test", "base", BREACHED),
    )
    .await;
    assert_eq!(
        base.status,
        StatusCode::CREATED,
        "Base has no password protection"
    );
    let ok = post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        create("gold@pec.test", "gold", "una-password-lunga"),
    )
    .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{}", ok.json());
    // Another tenant's address with a breached password: 409 before any check, no finding
    // recorded against a mailbox that is not the caller's.
    post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_b),
        create("gold@pec.test", "gold", BREACHED),
    )
    .await
    .problem(StatusCode::CONFLICT, "mailbox-exists");
    let found = w
        .app
        .backend
        .state
        .password_findings(now - chrono::Duration::days(1), now)
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    // The source down: fail closed, nothing created.
    Arc::get_mut(&mut w.app).expect("the only reference").breach =
        Arc::new(pec_ports::breach::MemoryBreach::down());
    let down = post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        create("gold2@pec.test", "gold", "una-password-lunga"),
    )
    .await;
    down.problem(StatusCode::SERVICE_UNAVAILABLE, "breach-check-unavailable");
    assert!(
        w.app
            .backend
            .state
            .mailbox("gold2@pec.test")
            .await
            .unwrap()
            .is_none()
    );
}

/// Tenant administration: the service sheet; the tenant's mailboxes listed and paged, a plan
/// changed (and a downgrade refused with the numbers), a mailbox suspended and resumed; a
/// domain added with its DNS records, verified, listed and removed; a domain of another
/// provider refused. Every admin route refuses a key without the admin scope and a mailbox
/// session (403), and another tenant's key reaches nothing of it (404), changing nothing.
#[tokio::test]
async fn tenant_administration_and_its_isolation() {
    let w = world().await;
    put_tenants(&w, &["a", "b"]).await;
    let mut other = pec_smime::index::ProviderEntry::for_certificate(
        "Altro Gestore",
        "o=postacert",
        vec!["pec.altro.test".into(), "studio.altro.test".into()],
        None,
        b"cert",
    );
    // An entry known by its certificate's hash only (the test has no certificate to give).
    other.certificates.clear();
    w.app.backend.objects.insert(
        "evidence",
        pec_ports::keys::DEFAULT_PROVIDER_INDEX_KEY,
        other.to_ldif(),
    );

    let sheet = get(&w, "/v1/plans", &w.key_a_read).await;
    assert_eq!(sheet.status, StatusCode::OK);
    let plans = sheet.json()["plans"].as_array().unwrap().clone();
    assert_eq!(plans.len(), 9);
    assert!(plans.iter().any(|p| p["name"] == "gold-plus"));
    assert_eq!(sheet.json()["expansions_gb"], json!([1, 3, 5]));

    // Mailboxes: the tenant's only, by address, in pages.
    let page = get(&w, "/v1/mailboxes?limit=2", &w.key_a).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.json());
    let addrs: Vec<String> = page.json()["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(addrs, [LOCKED, A2]);
    let cursor = page.json()["next_cursor"].as_str().unwrap().to_string();
    let rest = get(
        &w,
        &format!("/v1/mailboxes?limit=2&cursor={cursor}"),
        &w.key_a,
    )
    .await;
    assert_eq!(rest.json()["mailboxes"][0]["address"], A1);
    assert_eq!(rest.json()["next_cursor"], Value::Null);
    let b_list = get(&w, "/v1/mailboxes", &w.key_b).await.json();
    assert_eq!(b_list["mailboxes"].as_array().unwrap().len(), 1);
    assert_eq!(b_list["mailboxes"][0]["address"], B1);
    for bad in ["limit=0", "limit=abc", "limit=null&limit=null"] {
        get(&w, &format!("/v1/mailboxes?{bad}"), &w.key_a)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    }

    // A plan: up at once; down refused with the numbers when the usage does not fit.
    let plan = format!("/v1/mailboxes/{A1}/plan");
    let up = post_json(
        &w,
        &plan,
        Some(&w.key_a),
        json!({"plan": "gold", "expansion_gb": 1}),
    )
    .await;
    assert_eq!(up.status, StatusCode::OK, "{}", up.json());
    assert_eq!(up.json()["kind"], "upgrade");
    assert_eq!(up.json()["plan"], "gold");
    let item = pec_ports::MailboxItem {
        id: "big".into(),
        object_key: "k".into(),
        size: 3 << 30,
        kind: "busta-trasporto".into(),
        subject: String::new(),
        from: String::new(),
        identificativo: String::new(),
        evidence_key: String::new(),
        stored_at: Utc::now(),
        folder: None,
    };
    w.app
        .backend
        .state
        .store_in_mailbox(A1, &item, None, false)
        .await
        .unwrap();
    let down = post_json(&w, &plan, Some(&w.key_a), json!({"plan": "base"})).await;
    down.problem(StatusCode::CONFLICT, "plan-exceeded");
    assert!(
        down.json()["detail"].as_str().unwrap().contains("bytes"),
        "{}",
        down.json()
    );
    post_json(&w, &plan, Some(&w.key_a), json!({"plan": "platinum"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    post_json(
        &w,
        &plan,
        Some(&w.key_a),
        json!({"plan": "gold", "expansion_gb": 2}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    // Status: suspend with a reason, resume; a bad action or a missing reason is refused.
    let status = format!("/v1/mailboxes/{A2}/status");
    let s = post_json(
        &w,
        &status,
        Some(&w.key_a),
        json!({"action": "suspend", "reason": "non-payment"}),
    )
    .await;
    assert_eq!(s.status, StatusCode::OK, "{}", s.json());
    assert_eq!(
        (
            s.json()["status"].clone(),
            s.json()["status_reason"].clone()
        ),
        (json!("suspended"), json!("non-payment"))
    );
    post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": A2, "password": "segreta"}),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "mailbox-locked");
    let r = post_json(&w, &status, Some(&w.key_a), json!({"action": "resume"})).await;
    assert_eq!(r.json()["status"], "active");
    post_json(&w, &status, Some(&w.key_a), json!({"action": "resume"}))
        .await
        .problem(StatusCode::CONFLICT, "mailbox-status");
    post_json(&w, &status, Some(&w.key_a), json!({"action": "suspend"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    post_json(&w, &status, Some(&w.key_a), json!({"action": "delete"}))
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");

    // Domains.
    let added = post_json(
        &w,
        "/v1/domains",
        Some(&w.key_a),
        json!({"domain": "ordine.example.test"}),
    )
    .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.json());
    assert_eq!(added.json()["status"], "pending");
    let kinds: Vec<String> = added.json()["dns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .collect();
    for k in ["MX", "CNAME", "TXT"] {
        assert!(kinds.iter().any(|x| x == k), "{kinds:?}");
    }
    post_json(
        &w,
        "/v1/domains",
        Some(&w.key_a),
        json!({"domain": "Ordine.Example.test"}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    post_json(
        &w,
        "/v1/domains",
        Some(&w.key_a),
        json!({"domain": "studio.altro.test"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "domain-conflict");
    post_json(
        &w,
        "/v1/domains",
        Some(&w.key_b),
        json!({"domain": "ordine.example.test"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "domain-conflict");
    w.app.backend.identities.publish("ordine.example.test");
    let v = post_json(
        &w,
        "/v1/domains/ordine.example.test/verify",
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert_eq!(v.json()["status"], "verified", "{}", v.json());
    let listed = get(&w, "/v1/domains", &w.key_a).await.json();
    assert_eq!(listed["domains"][0]["domain"], "ordine.example.test");
    assert_eq!(
        get(&w, "/v1/domains", &w.key_b).await.json()["domains"],
        json!([])
    );

    // New mailboxes: in the provider's domain or the tenant's verified domain only.
    let created = post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        json!({"address": "Nuovo@Ordine.Example.test", "plan": "pro", "password": "una-password-lunga"}),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json());
    assert_eq!(created.json()["address"], "nuovo@ordine.example.test");
    assert_eq!(created.json()["status"], "active");
    let fresh = post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": "nuovo@ordine.example.test", "password": "una-password-lunga"}),
    )
    .await;
    assert_eq!(fresh.status, StatusCode::OK, "the new mailbox logs in");
    post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        json!({"address": "nuovo@ordine.example.test", "plan": "pro", "password": "una-password-lunga"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "mailbox-exists");
    post_json(
        &w,
        "/v1/mailboxes",
        Some(&w.key_a),
        json!({"address": "x@pec.test", "plan": "pro", "password": "una-password-lunga"}),
    )
    .await;
    for (who, body) in [
        (
            &w.key_b,
            json!({"address": "y@ordine.example.test", "plan": "pro", "password": "una-password-lunga"}),
        ),
        (
            &w.key_a,
            json!({"address": "y@a.pec.test", "plan": "pro", "password": "una-password-lunga"}),
        ),
        (
            &w.key_a,
            json!({"address": "y@pec.test", "plan": "pro", "password": "corta"}),
        ),
        (
            &w.key_a,
            json!({"address": "y@pec.test", "plan": "platinum", "password": "una-password-lunga"}),
        ),
        (
            &w.key_a,
            json!({"address": "y@pec.test", "plan": "pro", "expansion_gb": 2, "password": "una-password-lunga"}),
        ),
        (
            &w.key_a,
            json!({"address": "non un indirizzo", "plan": "pro", "password": "una-password-lunga"}),
        ),
    ] {
        post_json(&w, "/v1/mailboxes", Some(who), body)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    }
    assert!(
        w.app
            .backend
            .state
            .mailbox("y@ordine.example.test")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        w.app
            .backend
            .state
            .mailbox("x@pec.test")
            .await
            .unwrap()
            .map(|m| m.tenant),
        Some("a".to_string())
    );

    // Isolation: another tenant's key, a key without admin, a mailbox session.
    let before = (
        w.app.backend.state.mailbox(A1).await.unwrap(),
        w.app.backend.state.mailbox(A2).await.unwrap(),
        w.app
            .backend
            .state
            .domain("ordine.example.test")
            .await
            .unwrap(),
    );
    let session = login(&w, A1).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    for who in [&w.key_a_read, &session] {
        for (method, route, body) in [
            (Method::GET, "/v1/mailboxes".to_string(), None),
            (
                Method::POST,
                "/v1/mailboxes".to_string(),
                Some(
                    json!({"address": "z@pec.test", "plan": "pro", "password": "una-password-lunga"}),
                ),
            ),
            (Method::POST, plan.clone(), Some(json!({"plan": "base"}))),
            (
                Method::POST,
                status.clone(),
                Some(json!({"action": "revoke"})),
            ),
            (Method::GET, "/v1/domains".to_string(), None),
            (
                Method::POST,
                "/v1/domains".to_string(),
                Some(json!({"domain": "x.example.test"})),
            ),
            (
                Method::POST,
                "/v1/domains/ordine.example.test/verify".to_string(),
                Some(json!({})),
            ),
            (
                Method::DELETE,
                "/v1/domains/ordine.example.test".to_string(),
                None,
            ),
        ] {
            let body = body
                .map(|b| serde_json::to_vec(&b).unwrap())
                .unwrap_or_default();
            call(
                &w,
                method.clone(),
                &route,
                Some(who),
                Some("application/json"),
                body,
                &[],
            )
            .await
            .problem(StatusCode::FORBIDDEN, "missing-scope");
        }
    }
    for (method, route, body) in [
        (Method::POST, plan.clone(), Some(json!({"plan": "base"}))),
        (
            Method::POST,
            status.clone(),
            Some(json!({"action": "revoke"})),
        ),
        (
            Method::POST,
            "/v1/domains/ordine.example.test/verify".to_string(),
            Some(json!({})),
        ),
        (
            Method::DELETE,
            "/v1/domains/ordine.example.test".to_string(),
            None,
        ),
    ] {
        let body = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        call(
            &w,
            method,
            &route,
            Some(&w.key_b),
            Some("application/json"),
            body,
            &[],
        )
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    }
    let after = (
        w.app.backend.state.mailbox(A1).await.unwrap(),
        w.app.backend.state.mailbox(A2).await.unwrap(),
        w.app
            .backend
            .state
            .domain("ordine.example.test")
            .await
            .unwrap(),
    );
    assert_eq!(before, after, "nothing of tenant a changed");

    // Removal: refused while a mailbox is in the domain, then done.
    let mut m = w.app.backend.state.mailbox(A1).await.unwrap().unwrap();
    m.address = "socio@ordine.example.test".into();
    w.app.backend.state.create_mailbox(&m).await.unwrap();
    call(
        &w,
        Method::DELETE,
        "/v1/domains/ordine.example.test",
        Some(&w.key_a),
        None,
        Vec::new(),
        &[],
    )
    .await
    .problem(StatusCode::CONFLICT, "domain-conflict");
    let revoked = post_json(
        &w,
        "/v1/mailboxes/socio@ordine.example.test/status",
        Some(&w.key_a),
        json!({"action": "revoke"}),
    )
    .await;
    assert_eq!(revoked.json()["status"], "revoked");
    post_json(
        &w,
        "/v1/mailboxes/socio@ordine.example.test/status",
        Some(&w.key_a),
        json!({"action": "resume"}),
    )
    .await
    .problem(StatusCode::CONFLICT, "mailbox-status");
}

#[tokio::test]
async fn api_keys_created_rotated_and_revoked_over_http() {
    let w = world().await;
    // An admin-only key cannot mint a key with more than it has.
    let (admin_only, key) =
        crate::auth::new_api_key("a", "admin only", vec![Scope::Admin], Utc::now()).unwrap();
    w.app.backend.access.put_api_key(&key).await.unwrap();
    post_json(
        &w,
        "/v1/api-keys",
        Some(&admin_only),
        json!({"name": "ERP", "scopes": ["send"]}),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "missing-scope");
    // Without the admin scope, or as a mailbox user: no key management at all.
    get(&w, "/v1/api-keys", &w.key_a_read)
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    let session = login(&w, A1).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    get(&w, "/v1/api-keys", &session)
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    for bad in [
        json!({"name": "", "scopes": ["send"]}),
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["everything"]}),
        json!({"name": "x\n", "scopes": ["send"], "extra": 1}),
    ] {
        post_json(&w, "/v1/api-keys", Some(&w.key_a), bad)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    }

    // Created: shown once, works at once, listed without its secret.
    let made = post_json(
        &w,
        "/v1/api-keys",
        Some(&w.key_a),
        json!({"name": "ERP produzione", "scopes": ["send", "read", "read"]}),
    )
    .await;
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.json());
    let erp = made.json()["key"].as_str().unwrap().to_string();
    let erp_id = made.json()["id"].as_str().unwrap().to_string();
    assert!(erp.starts_with(&format!("pec_{erp_id}_")));
    assert_eq!(made.json()["scopes"], json!(["send", "read"]));
    assert_eq!(
        get(&w, &format!("/v1/mailboxes/{A1}"), &erp).await.status,
        StatusCode::OK
    );
    let list = get(&w, "/v1/api-keys", &w.key_a).await;
    assert_eq!(list.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&list.body).to_string();
    assert!(
        !text.contains(erp.rsplit('_').next().unwrap()),
        "a secret is listed"
    );
    let listed = list.json()["keys"].as_array().unwrap().clone();
    let row = listed.iter().find(|k| k["id"] == erp_id.as_str()).unwrap();
    assert_eq!(row["name"], "ERP produzione");
    assert_eq!(row["active"], true);
    assert!(row["last_used_at"].is_string(), "{row}");
    // Tenant B sees none of A's keys and can touch none.
    let b_list = get(&w, "/v1/api-keys", &w.key_b).await.json();
    assert!(
        b_list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["id"] != erp_id.as_str())
    );
    post_json(
        &w,
        &format!("/v1/api-keys/{erp_id}/rotate"),
        Some(&w.key_b),
        json!({"grace_seconds": 0}),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    call(
        &w,
        Method::DELETE,
        &format!("/v1/api-keys/{erp_id}"),
        Some(&w.key_b),
        None,
        vec![],
        &[],
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    assert_eq!(
        get(&w, &format!("/v1/mailboxes/{A1}"), &erp).await.status,
        StatusCode::OK
    );

    // Rotated with an hour's grace: both work for the hour, then only the new one.
    post_json(
        &w,
        &format!("/v1/api-keys/{erp_id}/rotate"),
        Some(&w.key_a),
        json!({"grace_seconds": 604801}),
    )
    .await
    .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let rotated = post_json(
        &w,
        &format!("/v1/api-keys/{erp_id}/rotate"),
        Some(&w.key_a),
        json!({"grace_seconds": 3600}),
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.json());
    let erp2 = rotated.json()["key"].as_str().unwrap().to_string();
    assert_ne!(erp2, erp);
    assert_eq!(rotated.json()["name"], "ERP produzione");
    assert_eq!(rotated.json()["scopes"], json!(["send", "read"]));
    // A second rotation of the same key is refused: rotate its successor.
    post_json(
        &w,
        &format!("/v1/api-keys/{erp_id}/rotate"),
        Some(&w.key_a),
        json!({"grace_seconds": 0}),
    )
    .await
    .problem(StatusCode::CONFLICT, "key-not-rotatable");
    w.advance(3599);
    assert_eq!(
        get(&w, &format!("/v1/mailboxes/{A1}"), &erp).await.status,
        StatusCode::OK
    );
    w.advance(1);
    get(&w, &format!("/v1/mailboxes/{A1}"), &erp)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        get(&w, &format!("/v1/mailboxes/{A1}"), &erp2).await.status,
        StatusCode::OK
    );
    let listed = get(&w, "/v1/api-keys", &w.key_a).await.json();
    let old = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == erp_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(old["active"], false);
    assert!(old["expires_at"].is_string());

    // Revoked: refused at once, still listed.
    let erp2_id = rotated.json()["id"].as_str().unwrap().to_string();
    let gone = call(
        &w,
        Method::DELETE,
        &format!("/v1/api-keys/{erp2_id}"),
        Some(&w.key_a),
        None,
        vec![],
        &[],
    )
    .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    get(&w, &format!("/v1/mailboxes/{A1}"), &erp2)
        .await
        .problem(StatusCode::UNAUTHORIZED, "unauthorized");
    call(
        &w,
        Method::DELETE,
        "/v1/api-keys/not-a-key",
        Some(&w.key_a),
        None,
        vec![],
        &[],
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
}

const MEMBERS_CSV: &str = "Nome;Cognome;Codice fiscale;E-mail;Cellulare;Piano\r\n\
Mario;Rossi;RSSMRA80A01H501U;mario@example.it;333 1234567;\r\n\
Maria;D'Angelo;DNGMRA85M41F205U;maria@example.it;;gold\r\n\
Mario;Rossi;RSSMRA80A01H501U;doppio@example.it;;\r\n\
Luca;Bianchi;BNCLCU70A01H501O;luca@example.it;;\r\n";

async fn import(w: &World, query: &str, auth: &str, ct: &str, body: &[u8]) -> Answer {
    call(
        w,
        Method::POST,
        &format!("/v1/members/import?{query}"),
        Some(auth),
        Some(ct),
        body.to_vec(),
        &[],
    )
    .await
}

#[tokio::test]
async fn members_imported_and_links_resent_over_http() {
    let w = world_set(|s| s.activation_url = Some("https://webmail.pec.test/attiva".into())).await;
    put_tenants(&w, &["a", "b"]).await;
    let csv = MEMBERS_CSV.as_bytes();
    // Who may, what it must be.
    import(&w, "domain=pec.test", &w.key_a_read, "text/csv", csv)
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    import(&w, "domain=pec.test", &w.key_a, "application/json", csv)
        .await
        .problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type");
    for bad in [
        "domain=Pec..test",
        "domain=pec.test&plan=diamond",
        "domain=pec.test&pattern=x",
        "domain=pec.test&valid_days=31",
        "plan=gold",
    ] {
        import(&w, bad, &w.key_a, "text/csv", csv)
            .await
            .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    }
    // A domain that is not one of the tenant's verified ones.
    import(&w, "domain=studio.example.it", &w.key_a, "text/csv", csv)
        .await
        .problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    import(
        &w,
        "domain=pec.test",
        &w.key_a,
        "text/csv",
        b"Nome;Cognome\r\nMario;Rossi\r\n",
    )
    .await
    .problem(StatusCode::BAD_REQUEST, "unreadable-table");
    assert!(w.app.backend.transport.take_mail().is_empty());

    let first = import(
        &w,
        "domain=pec.test&plan=standard",
        &w.key_a,
        "text/csv; charset=utf-8",
        csv,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json());
    let r = first.json();
    assert_eq!(r["complete"], true);
    assert_eq!(
        (r["created"].clone(), r["refused"].clone()),
        (json!(3), json!(1)),
        "{r}"
    );
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows[0]["address"], "mario.rossi@pec.test");
    assert_eq!(rows[1]["address"], "maria.dangelo@pec.test");
    assert_eq!(rows[2]["row"], 4);
    assert_eq!(rows[2]["outcome"], "refused");
    assert!(
        rows[2]["reason"]
            .as_str()
            .unwrap()
            .contains("RSSMRA80A01H501U"),
        "{}",
        rows[2]
    );
    let maria = w
        .app
        .backend
        .state
        .mailbox("maria.dangelo@pec.test")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((maria.tenant.as_str(), maria.plan), ("a", Plan::Gold));
    // One link per member, to the member's contact address; no password anywhere.
    let mail = w.app.backend.transport.take_mail();
    assert_eq!(mail.len(), 3);
    let to_mario = mail
        .iter()
        .find(|m| m.destinations == ["mario@example.it"])
        .unwrap();
    let text = String::from_utf8_lossy(&to_mario.raw).to_string();
    assert!(text.contains("https://webmail.pec.test/attiva#"), "{text}");
    // The same table again: nothing made twice, nothing sent.
    let again = import(&w, "domain=pec.test", &w.key_a, "text/csv", csv)
        .await
        .json();
    assert_eq!(
        (again["existing"].clone(), again["created"].clone()),
        (json!(3), json!(0))
    );
    assert!(w.app.backend.transport.take_mail().is_empty());

    // A new link for Mario: the first stops working.
    let resent = post_json(
        &w,
        "/v1/mailboxes/mario.rossi@pec.test/activation",
        Some(&w.key_a),
        json!({"valid_days": 3}),
    )
    .await;
    assert_eq!(resent.status, StatusCode::ACCEPTED, "{}", resent.json());
    assert_eq!(resent.json()["email"], "mario@example.it");
    assert_eq!(w.app.backend.transport.take_mail().len(), 1);
    let old_token = text
        .split("attiva#")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let used = post_json(
        &w,
        "/v1/activation",
        None,
        json!({"token": old_token, "password": "una-password-lunga-1"}),
    )
    .await;
    assert_ne!(used.status, StatusCode::OK, "{}", used.json());
    // Tenant B: neither the link nor the mailbox.
    post_json(
        &w,
        "/v1/mailboxes/mario.rossi@pec.test/activation",
        Some(&w.key_b),
        json!({}),
    )
    .await
    .problem(StatusCode::NOT_FOUND, "not-found");
    // A mailbox not made by an import has no link to resend.
    post_json(
        &w,
        &format!("/v1/mailboxes/{A1}/activation"),
        Some(&w.key_a),
        json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT, "not-possible");
}

#[tokio::test]
async fn a_member_import_goes_on_over_several_requests() {
    let w = world_set(|s| {
        s.activation_url = Some("https://webmail.pec.test/attiva".into());
        s.import_budget = std::time::Duration::ZERO;
    })
    .await;
    put_tenants(&w, &["a"]).await;
    // 25 members; with no time to spare each request does one batch of ten.
    let mut table = String::from("Nome,Cognome,Codice fiscale,E-mail\n");
    let names = ["Anna", "Bruno", "Carla", "Dario", "Elena"];
    let surnames = ["Esposito", "Ferrari", "Gallo", "Romano", "Greco"];
    let mut n = 0;
    for nome in names {
        for cognome in surnames {
            n += 1;
            let first15 = fiscal_first15(cognome, nome, n);
            let cf = format!(
                "{first15}{}",
                pec_members::fiscal::check_character(&first15)
            );
            table.push_str(&format!("{nome},{cognome},{cf},m{n}@example.it\n"));
            if n == 15 {
                // Row 17, among the second request's rows: refused once, by that request.
                table.push_str("Ugo,Neri,RSSMRA85T10A562X,ugo@example.it\n");
            }
        }
    }
    let mut refused_seen = Vec::new();
    // Each answer names the row to go on from.
    let mut query = "domain=pec.test".to_string();
    for (i, left) in [15, 5, 0].into_iter().enumerate() {
        let r = import(&w, &query, &w.key_a, "text/csv", table.as_bytes()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json());
        let r = r.json();
        assert_eq!(r["rows_left"], left, "request {i}: {r}");
        assert_eq!(r["complete"], left == 0);
        assert_eq!(r["created"], if left == 0 { 5 } else { 10 });
        assert_eq!(r["existing"], 0);
        refused_seen.extend(
            r["rows"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|row| row["outcome"] == "refused")
                .map(|row| (i, row["row"].as_u64().unwrap())),
        );
        match r["next_row"].as_u64() {
            Some(next) => query = format!("domain=pec.test&from_row={next}"),
            None => assert_eq!(left, 0),
        }
    }
    assert_eq!(refused_seen, [(1, 17)]);
    // The whole table again from the start: every member is there, nothing is sent.
    let r = import(
        &w,
        "domain=pec.test",
        &w.key_a,
        "text/csv",
        table.as_bytes(),
    )
    .await
    .json();
    assert_eq!(r["existing"], 10, "{r}");
    assert_eq!(w.app.backend.transport.take_mail().len(), 25);
}

/// The first 15 characters of a plausible fiscal code for the test's members.
fn fiscal_first15(cognome: &str, nome: &str, n: usize) -> String {
    let c: String = cognome
        .to_ascii_uppercase()
        .chars()
        .filter(|c| !"AEIOU".contains(*c))
        .take(3)
        .collect();
    let m: String = nome
        .to_ascii_uppercase()
        .chars()
        .filter(|c| !"AEIOU".contains(*c))
        .take(3)
        .collect();
    format!("{c:X<3}{m:X<3}80A{:02}H501", n)
}

/// A session opened before a spam lock stops at once, and its answer says what happened and
/// what to do (issue #18).
#[tokio::test]
async fn a_spam_lock_ends_sessions_and_says_why() {
    let w = world().await;
    let t = login(&w, A1).await;
    let access = t["access_token"].as_str().unwrap().to_string();
    let note = pec_ports::LockNote {
        reason: "spam".into(),
        since: w.app.now(),
        by_operator: false,
        detections: 11,
        unlocked_at: None,
    };
    assert!(matches!(
        pec_pipeline::lockout::lock(&w.app.backend.state, A1, note)
            .await
            .unwrap(),
        pec_pipeline::lockout::Locked::Now(_)
    ));
    let r = get(&w, &format!("/v1/mailboxes/{A1}"), &access).await;
    r.problem(StatusCode::FORBIDDEN, "mailbox-locked");
    let detail = r.json()["detail"].as_str().unwrap().to_string();
    assert!(detail.contains("because it sent spam"), "{detail}");
    assert!(detail.contains("contact address"), "{detail}");
    // The old password no longer opens it.
    post_json(
        &w,
        "/v1/auth/login",
        None,
        json!({"address": A1, "password": "segreta"}),
    )
    .await
    .problem(StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn mailbox_settings_spam_filing_and_sms() {
    let w = world().await;
    let token = login(&w, A1).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let patch = |auth: String, body: Value| {
        let w = &w;
        async move {
            call(
                w,
                Method::PATCH,
                &format!("/v1/mailboxes/{A1}/settings"),
                Some(&auth),
                Some("application/json"),
                body.to_string().into_bytes(),
                &[],
            )
            .await
        }
    };
    let a = get(&w, &format!("/v1/mailboxes/{A1}/settings"), &token).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({"ordinary_spam": "junk", "sms_included": false})
    );
    // Base does not include SMS notification: refused, naming the plans that do.
    let a = patch(token.clone(), json!({"sms": {"number": "333 123 4567"}})).await;
    a.problem(StatusCode::FORBIDDEN, "not-in-plan");
    assert!(a.json()["detail"].as_str().unwrap().contains("Gold"));
    // The owner sets the filing; a bad value and a bad number are named.
    let a = patch(token.clone(), json!({"ordinary_spam": "delete"})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["ordinary_spam"], "delete");
    let a = patch(
        token.clone(),
        json!({"ordinary_spam": "cestino", "sms": {"number": "06 1234567"}}),
    )
    .await;
    a.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    let errors = a.json();
    let pointers: Vec<&str> = errors["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, vec!["/ordinary_spam", "/sms/number"]);
    // On Gold: on (stored as E.164), then off with null.
    let m = w.app.backend.state.mailbox(A1).await.unwrap().unwrap();
    let gold = Mailbox {
        plan: Plan::Gold,
        ..m.clone()
    };
    assert!(
        w.app
            .backend
            .state
            .replace_mailbox(&m, &gold, None)
            .await
            .unwrap()
    );
    let a = patch(
        token.clone(),
        json!({"sms": {"number": "333 123 4567", "ordinary": true}}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({"ordinary_spam": "delete", "sms": {"number": "+393331234567", "ordinary": true}, "sms_included": true})
    );
    let stored = w.app.backend.state.mailbox(A1).await.unwrap().unwrap();
    assert_eq!(stored.sms.unwrap().number, "+393331234567");
    // A read-only key cannot change it; the tenant's admin key can; another tenant sees 404.
    patch(w.key_a_read.clone(), json!({"sms": null}))
        .await
        .problem(StatusCode::FORBIDDEN, "missing-scope");
    patch(w.key_b.clone(), json!({"sms": null}))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let a = patch(w.key_a.clone(), json!({"sms": null})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.json().get("sms").is_none(), "{}", a.json());
    // Another mailbox's owner cannot see or change it.
    let other = login(&w, A2).await["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    get(&w, &format!("/v1/mailboxes/{A1}/settings"), &other)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    // Unknown fields are refused.
    let a = patch(token, json!({"sms_number": "x"})).await;
    a.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert!(a.json()["detail"].as_str().unwrap().contains("sms_number"));
}

#[tokio::test]
async fn bulk_jobs_made_followed_and_steered_over_http() {
    use base64::Engine;
    let w = world().await;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let list = "Nome;PEC\nAnna;anna@altro.test\nBruno;bruno@altro.test\nRotto;x\n";
    let job = |from: &str, dry_run: bool| {
        json!({"from": from, "name": "Avvisi", "subject": "Per {{ Nome }}", "text": "Ciao {{ Nome }}",
               "list": {"filename": "lista.csv", "content": b64(list.as_bytes())},
               "attachments": [{"filename": "a.pdf", "content_type": "application/pdf", "content": b64(b"%PDF-1.7")}],
               "dry_run": dry_run})
    };
    // Plan Base: no mass sending.
    post_json(&w, "/v1/bulk-jobs", Some(&w.key_a), job(A1, false))
        .await
        .problem(StatusCode::FORBIDDEN, "plan-lacks-mass-sending");
    let old = w.app.backend.state.mailbox(A1).await.unwrap().unwrap();
    let mut pro = old.clone();
    pro.plan = Plan::Pro;
    assert!(
        w.app
            .backend
            .state
            .replace_mailbox(&old, &pro, None)
            .await
            .unwrap()
    );
    // Another tenant's mailbox is no mailbox; a bad list or template says why, storing nothing.
    post_json(&w, "/v1/bulk-jobs", Some(&w.key_b), job(A1, false))
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let mut bad = job(A1, false);
    bad["subject"] = json!("Per {{ Cognome }}");
    let a = post_json(&w, "/v1/bulk-jobs", Some(&w.key_a), bad).await;
    a.problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request");
    assert!(String::from_utf8_lossy(&a.body).contains("Cognome"));
    let dry = post_json(&w, "/v1/bulk-jobs", Some(&w.key_a), job(A1, true)).await;
    assert_eq!(
        dry.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&dry.body)
    );
    assert_eq!(dry.json()["status"], "dry-run");
    assert_eq!(dry.json()["preview"][0]["subject"], "Per Anna");
    assert!(
        w.app
            .backend
            .objects
            .list_keys("raw", "bulk/")
            .await
            .unwrap()
            .is_empty()
    );
    // Made: 2 rows, 1 set aside, one chunk on the bulk queue.
    let made = post_json(&w, "/v1/bulk-jobs", Some(&w.key_a), job(A1, false)).await;
    assert_eq!(
        made.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&made.body)
    );
    let v = made.json();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(
        (v["rows"].as_u64(), v["skipped"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["set_aside"][0]["row"], 4);
    assert_eq!(v["folder"], format!("Invii massivi/Avvisi ({id})"));
    assert_eq!(w.app.backend.queue.take("bulk").len(), 1);
    // Followed by its tenant (a read key too), not by another.
    let s = get(&w, &format!("/v1/bulk-jobs/{id}"), &w.key_a_read).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(
        (s.json()["status"].as_str(), s.json()["submitted"].as_u64()),
        (Some("running"), Some(0))
    );
    get(&w, &format!("/v1/bulk-jobs/{id}"), &w.key_b)
        .await
        .problem(StatusCode::NOT_FOUND, "not-found");
    let r = get(&w, &format!("/v1/bulk-jobs/{id}/report"), &w.key_a).await;
    assert_eq!(r.status, StatusCode::OK);
    let csv = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(csv.lines().count(), 4, "{csv}");
    assert!(csv.contains("anna@altro.test,,,,,waiting"), "{csv}");
    let r = get(
        &w,
        &format!("/v1/bulk-jobs/{id}/report?failures=true"),
        &w.key_a,
    )
    .await;
    assert_eq!(
        String::from_utf8(r.body.to_vec()).unwrap().lines().count(),
        2
    );
    // Steered: a read key may not; pause, resume (the chunk handed out again), cancel, then no
    // resume.
    post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/pause"),
        Some(&w.key_a_read),
        json!({}),
    )
    .await
    .problem(StatusCode::FORBIDDEN, "missing-scope");
    let p = post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/pause"),
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert_eq!(p.json()["status"], "paused");
    let p = post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/resume"),
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert_eq!(p.json()["status"], "running");
    assert_eq!(w.app.backend.queue.take("bulk").len(), 1);
    // A running job is not resumed again (its chunks are out).
    post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/resume"),
        Some(&w.key_a),
        json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT, "job-not-paused");
    assert!(w.app.backend.queue.take("bulk").is_empty());
    let p = post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/cancel"),
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert_eq!(p.json()["status"], "cancelled");
    post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/resume"),
        Some(&w.key_a),
        json!({}),
    )
    .await
    .problem(StatusCode::CONFLICT, "job-cancelled");
    let a = post_json(
        &w,
        &format!("/v1/bulk-jobs/{id}/explode"),
        Some(&w.key_a),
        json!({}),
    )
    .await;
    assert!(a.status.is_client_error(), "{}", a.status);
}

#[test]
fn operation_ids_are_unique() {
    let doc: Value = serde_json::from_str(&crate::openapi::document_json()).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(id) = op.get("operationId").and_then(Value::as_str) {
                assert!(
                    seen.insert(id.to_string()),
                    "{method} {path}: operationId {id} twice"
                );
            }
        }
    }
}
