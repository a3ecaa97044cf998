//! The scan step over in-memory stores, with fake engines, real yara-x, and the real clamd
//! adapter pointed at a clamd that is not running. The sign step signs its notices with the test
//! PKI's provider key (`pec-testkit`).

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use chrono::{DateTime, Months, TimeZone, Utc};
use pec_core::UnsignedMessage;
use pec_core::build::{self, Ctx, Provider};
use pec_core::classify::{Kind, classify};
use pec_core::daticert::TipoDestinatario;
use pec_core::ids::SequentialIds;
use pec_pipeline::scan::metrics::RecordedMetrics;
use pec_pipeline::scan::{Buckets, Engines, Point, ScanRequest, ScanStep};
use pec_ports::MemoryRetained;
use pec_ports::MemoryStore;
use pec_scan::testing::{self, Encoding, FakeEngine, Part, eicar, message};
use pec_scan::{
    ClamdEngine, Decision, EngineKind, OnUnscannable, PolicyBook, ScanPolicy, Verdict, YaraEngine,
};

const RAW: &str = "raw";
const EVIDENCE: &str = "evidence";
const CONSERVATION: &str = "conservation";

type Step = ScanStep<MemoryStore, MemoryRetained, RecordedMetrics>;

fn provider() -> Provider {
    Provider::new("Example Gestore PEC S.p.A.", "pec.example.test").unwrap()
}

fn step_with(engines: Engines, policies: PolicyBook) -> Step {
    ScanStep::new(
        MemoryStore::new(),
        MemoryRetained::new(),
        RecordedMetrics::default(),
        engines,
        policies,
        provider(),
        Buckets {
            raw: RAW.into(),
            evidence: EVIDENCE.into(),
            conservation: CONSERVATION.into(),
        },
    )
}

/// clamav and yara fakes that both detect EICAR.
fn fakes() -> (Arc<FakeEngine>, Arc<FakeEngine>, Engines) {
    let clamav = Arc::new(FakeEngine::detecting(
        "clamav",
        &eicar(),
        "Eicar-Test-Signature",
    ));
    let yara = Arc::new(FakeEngine::detecting(
        "yara",
        &eicar(),
        "PEC_EICAR_Test_File",
    ));
    let engines = Engines::new()
        .with(EngineKind::Clamav, clamav.clone())
        .with(EngineKind::Yara, yara.clone());
    (clamav, yara, engines)
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, 9, 41, 7).unwrap()
}

fn access(key: &str) -> ScanRequest {
    ScanRequest {
        version: 1,
        bucket: RAW.into(),
        key: key.into(),
        tenant: "acme".into(),
        point: Point::Access {
            identificativo: "20261123094107000.tok1@pec.example.test".into(),
            user: "mittente@pec.example.test".into(),
            reverse_path: "mittente@pec.example.test".into(),
            recipients: vec!["destinatario@pec.example.test".into()],
            certified_recipients: vec!["destinatario@pec.example.test".into()],
        },
    }
}

fn receiving(key: &str) -> ScanRequest {
    ScanRequest {
        version: 1,
        bucket: RAW.into(),
        key: key.into(),
        tenant: "acme".into(),
        point: Point::Receiving {
            recipients: vec![
                "anna@pec.example.test".into(),
                "bruno@pec.example.test".into(),
            ],
            sender_receipt_address: "posta-certificata@pec.altro.test".into(),
        },
    }
}

fn sqs(id: &str, request: &ScanRequest) -> SqsMessage {
    let mut m = SqsMessage::default();
    m.message_id = Some(id.into());
    m.body = Some(serde_json::to_string(request).unwrap());
    m
}

fn batch(records: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = records;
    e
}

fn failed(r: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

fn infected_message() -> Vec<u8> {
    testing::eicar_cases().remove(3).1 // EICAR in a zip in a forwarded message
}

fn clean_message() -> Vec<u8> {
    message(
        "clean",
        "Fattura",
        &[
            Part::text("in allegato"),
            Part::attachment(
                "application/pdf",
                "f.pdf",
                Encoding::Base64,
                testing::pdf_like(50_000, 1),
            ),
        ],
    )
}

/// A transport envelope from another provider (pec.altro.test) carrying `original`.
fn envelope(original: &[u8]) -> Vec<u8> {
    let other = Provider::new("Altro Gestore S.p.A.", "pec.altro.test").unwrap();
    let accepted = pec_core::original::accept(
        original,
        "20261123094000000.x1@pec.altro.test",
        "<fallback@pec.altro.test>",
        &|_| TipoDestinatario::Certificato,
    )
    .unwrap();
    let mut ids = SequentialIds::new("env");
    let mut ctx = Ctx {
        provider: &other,
        now: now(),
        ids: &mut ids,
    };
    build::busta_trasporto(&mut ctx, &accepted)
        .unwrap()
        .render()
}

fn notice(step: &Step, key: &str) -> UnsignedMessage {
    let bytes = step
        .store()
        .object(EVIDENCE, key)
        .unwrap_or_else(|| panic!("no notice at {key}"));
    UnsignedMessage::from_rendered(&bytes).expect("a rendered unsigned message")
}

fn keys_under(step: &Step, prefix: &str, candidates: &[String]) -> usize {
    candidates
        .iter()
        .filter(|k| k.starts_with(prefix) && step.store().object(EVIDENCE, k).is_some())
        .count()
}

#[tokio::test]
async fn clean_message_is_recorded_and_handed_on() {
    let (clamav, yara, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/2026/a.eml", clean_message());
    let response = step
        .handle(
            batch(vec![sqs("m1", &access("submitted/2026/a.eml"))]),
            now(),
        )
        .await;
    assert!(failed(&response).is_empty());
    let record: pec_pipeline::scan::ScanRecord = serde_json::from_slice(
        &step
            .store()
            .object(EVIDENCE, "scan/verdict/submitted/2026/a.eml.json")
            .expect("verdict record"),
    )
    .unwrap();
    assert_eq!(record.report.verdict, Verdict::Clean);
    assert_eq!(record.report.engines, ["clamav", "yara"]);
    assert_eq!(record.decision, Decision::Pass { warning: None });
    assert_eq!(
        record.outputs.clean.as_deref(),
        Some("scan/clean/submitted/2026/a.eml.json")
    );
    let handoff = step
        .store()
        .object(EVIDENCE, "scan/clean/submitted/2026/a.eml.json")
        .expect("clean hand-off");
    assert_eq!(
        serde_json::from_slice::<pec_pipeline::scan::ScanRecord>(&handoff).unwrap(),
        record
    );
    assert_eq!(step.store().writes(), 2);
    assert!(step.retained().is_empty());
    assert_eq!((clamav.calls(), yara.calls()), (1, 1));
}

/// Issue #18: the spam score rides in the record and the hand-off; a spam engine that is down
/// never holds the message (unscored, with the alarm metric), and a virus is never scored.
#[tokio::test]
async fn spam_is_scored_after_the_antivirus_and_an_engine_down_never_holds_mail() {
    use pec_ports::spam::{FakeSpam, GTUBE, SpamCheck};
    let read = |step: &Step, key: &str| -> pec_pipeline::scan::ScanRecord {
        serde_json::from_slice(&step.store().object(EVIDENCE, key).expect("record")).unwrap()
    };
    let spam_body = format!("Subject: x\r\n\r\n{GTUBE}\r\n").into_bytes();

    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default()).with_spam(FakeSpam::new());
    step.store()
        .insert(RAW, "submitted/2026/s.eml", spam_body.clone());
    step.store()
        .insert(RAW, "submitted/2026/v.eml", infected_message());
    for key in ["submitted/2026/s.eml", "submitted/2026/v.eml"] {
        let response = step
            .handle(batch(vec![sqs("m1", &access(key))]), now())
            .await;
        assert!(failed(&response).is_empty());
    }
    let handoff: pec_ports::contract::ScanHandoff = serde_json::from_slice(
        &step
            .store()
            .object(EVIDENCE, "scan/clean/submitted/2026/s.eml.json")
            .unwrap(),
    )
    .unwrap();
    assert!(
        handoff.spam.as_ref().is_some_and(SpamCheck::is_spam),
        "{handoff:?}"
    );
    assert_eq!(
        read(&step, "scan/verdict/submitted/2026/v.eml.json").spam,
        None
    );

    let (_, _, engines) = fakes();
    let down = step_with(engines, PolicyBook::default()).with_spam(FakeSpam::down());
    down.store().insert(RAW, "submitted/2026/s.eml", spam_body);
    let response = down
        .handle(
            batch(vec![sqs("m1", &access("submitted/2026/s.eml"))]),
            now(),
        )
        .await;
    assert!(
        failed(&response).is_empty(),
        "the message waits for no spam engine"
    );
    let record = read(&down, "scan/clean/submitted/2026/s.eml.json");
    assert!(
        matches!(&record.spam, Some(SpamCheck::Unscored { reason }) if reason.contains("down")),
        "{:?}",
        record.spam
    );
    assert_eq!(down.metrics().engines(), ["rspamd"]);
}

#[tokio::test]
async fn virus_at_the_access_point_is_refused_quarantined_and_never_handed_on() {
    let (clamav, yara, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    let raw = infected_message();
    step.store().insert(RAW, "submitted/b.eml", raw.clone());
    let response = step
        .handle(batch(vec![sqs("m1", &access("submitted/b.eml"))]), now())
        .await;
    assert!(failed(&response).is_empty());
    assert_eq!(
        (clamav.calls(), yara.calls()),
        (1, 0),
        "the chain stops at the first hit"
    );

    let n = notice(
        &step,
        "unsigned/scan/submitted/b.eml/non-accettazione-virus.eml",
    );
    assert_eq!(n.header("X-Ricevuta"), Some("non-accettazione"));
    assert_eq!(n.header("To"), Some("mittente@pec.example.test"));
    assert!(
        n.header("Subject")
            .unwrap()
            .starts_with("AVVISO DI NON ACCETTAZIONE PER VIRUS: "),
        "{:?}",
        n.header("Subject")
    );
    let rendered = n.render();
    let c = classify(&rendered);
    assert_eq!(c.kind, Kind::NonAccettazione, "{:?}", c.anomalies);
    let d = c.daticert.expect("daticert");
    assert_eq!(d.errore.as_str(), "virus");
    let esteso = d.dati.errore_esteso.unwrap_or_default();
    assert!(
        esteso.contains("Eicar-Test-Signature") && esteso.contains("2.2!eicar.com"),
        "{esteso}"
    );
    assert_eq!(
        d.dati.identificativo,
        "20261123094107000.tok1@pec.example.test"
    );

    let (copy, until) = step
        .retained()
        .object(CONSERVATION, "quarantine/submitted/b.eml")
        .expect("quarantine copy");
    assert_eq!(copy, raw);
    assert_eq!(until, now().checked_add_months(Months::new(30)).unwrap());
    assert!(
        step.store()
            .object(EVIDENCE, "scan/clean/submitted/b.eml.json")
            .is_none(),
        "infected mail is never handed on"
    );
}

#[tokio::test]
async fn virus_at_the_receiving_point_notifies_the_sending_provider_and_the_sender() {
    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    let raw = envelope(&infected_message());
    assert_eq!(classify(&raw).kind, Kind::BustaTrasporto);
    step.store().insert(RAW, "inbound/c.eml", raw.clone());
    let response = step
        .handle(batch(vec![sqs("m1", &receiving("inbound/c.eml"))]), now())
        .await;
    assert!(failed(&response).is_empty());

    let rv = notice(&step, "unsigned/scan/inbound/c.eml/rilevazione-virus.eml");
    assert_eq!(rv.header("X-Ricevuta"), Some("rilevazione-virus"));
    assert_eq!(rv.header("To"), Some("posta-certificata@pec.altro.test"));
    assert!(
        rv.header("Subject")
            .unwrap()
            .starts_with("AVVISO DI RILEVAZIONE VIRUS: ")
    );
    let d = classify(&rv.render()).daticert.expect("daticert");
    assert_eq!(
        d.dati.ricezione,
        ["anna@pec.example.test", "bruno@pec.example.test"]
    );
    assert_eq!(d.dati.identificativo, "20261123094000000.x1@pec.altro.test");

    for (i, who) in ["anna@pec.example.test", "bruno@pec.example.test"]
        .iter()
        .enumerate()
    {
        let mc = notice(
            &step,
            &format!(
                "unsigned/scan/inbound/c.eml/mancata-consegna-virus-{}.eml",
                i + 1
            ),
        );
        assert_eq!(mc.header("X-Ricevuta"), Some("errore-consegna"));
        assert_eq!(
            mc.header("To"),
            Some("mittente@pec.example.test"),
            "to the original sender"
        );
        assert!(
            mc.header("Subject")
                .unwrap()
                .starts_with("AVVISO DI MANCATA CONSEGNA PER VIRUS: ")
        );
        let d = classify(&mc.render()).daticert.expect("daticert");
        assert_eq!(d.errore.as_str(), "virus");
        assert_eq!(d.dati.consegna.as_deref(), Some(*who));
    }
    assert!(
        step.retained()
            .object(CONSERVATION, "quarantine/inbound/c.eml")
            .is_some()
    );
    assert!(
        step.store()
            .object(EVIDENCE, "scan/clean/inbound/c.eml.json")
            .is_none(),
        "never delivered"
    );
}

#[tokio::test]
async fn ordinary_mail_with_a_virus_at_the_receiving_point_is_quarantined_without_notices() {
    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "inbound/d.eml", infected_message());
    let handled = step
        .scan_request(&receiving("inbound/d.eml"), now())
        .await
        .unwrap();
    assert!(handled.record.outputs.notices.is_empty());
    assert!(
        handled
            .record
            .outputs
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("not a PEC transport envelope")
    );
    assert!(
        step.retained()
            .object(CONSERVATION, "quarantine/inbound/d.eml")
            .is_some()
    );
    assert!(
        step.store()
            .object(EVIDENCE, "scan/clean/inbound/d.eml.json")
            .is_none()
    );
}

#[tokio::test]
async fn duplicate_events_produce_one_outcome() {
    let (clamav, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/e.eml", infected_message());
    step.store().insert(RAW, "submitted/f.eml", clean_message());
    let event = || {
        batch(vec![
            sqs("m-e", &access("submitted/e.eml")),
            sqs("m-f", &access("submitted/f.eml")),
        ])
    };
    assert!(failed(&step.handle(event(), now()).await).is_empty());
    let writes = step.store().writes();
    let notice_before = step.store().object(
        EVIDENCE,
        "unsigned/scan/submitted/e.eml/non-accettazione-virus.eml",
    );
    for later in [
        now() + chrono::Duration::minutes(5),
        now() + chrono::Duration::days(1),
    ] {
        assert!(failed(&step.handle(event(), later).await).is_empty());
    }
    assert_eq!(
        step.store().writes(),
        writes,
        "no second record, notice or hand-off"
    );
    assert_eq!(step.retained().len(), 1, "one quarantine copy");
    assert_eq!(clamav.calls(), 2, "duplicates are not scanned again");
    assert_eq!(
        step.store().object(
            EVIDENCE,
            "unsigned/scan/submitted/e.eml/non-accettazione-virus.eml"
        ),
        notice_before
    );
    let handled = step
        .scan_request(&access("submitted/e.eml"), now())
        .await
        .unwrap();
    assert!(handled.replayed);
    assert_eq!(handled.writes, 0);
}

#[tokio::test]
async fn an_interrupted_outcome_is_completed_by_the_retry() {
    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/g.eml", infected_message());
    // First attempt: only the record got written (as if the function died right after it).
    let first = step
        .scan_request(&access("submitted/g.eml"), now())
        .await
        .unwrap();
    let record_key = "scan/verdict/submitted/g.eml.json";
    let other = step_with(fakes().2, PolicyBook::default());
    other
        .store()
        .insert(RAW, "submitted/g.eml", infected_message());
    other.store().insert(
        EVIDENCE,
        record_key,
        step.store().object(EVIDENCE, record_key).unwrap(),
    );
    let retried = other
        .scan_request(
            &access("submitted/g.eml"),
            now() + chrono::Duration::hours(1),
        )
        .await
        .unwrap();
    assert!(retried.replayed);
    assert_eq!(retried.writes, 2, "quarantine + notice");
    // Byte-identical notice: same time (the record's) and deterministic ids.
    let key = "unsigned/scan/submitted/g.eml/non-accettazione-virus.eml";
    assert_eq!(
        other.store().object(EVIDENCE, key),
        step.store().object(EVIDENCE, key)
    );
    assert_eq!(retried.record, first.record);
}

/// The issue's "clamd stopped" case: the real clamd adapter on a socket nobody listens on.
#[tokio::test]
async fn clamd_stopped_fails_the_step_and_routes_nothing() {
    let socket = std::env::temp_dir().join(format!(
        "pec-scan-step-no-clamd-{}/clamd.sock",
        std::process::id()
    ));
    let clamav = ClamdEngine::new(socket).with_call_timeout(Duration::from_secs(5));
    let yara = YaraEngine::builtin().unwrap();
    let engines = Engines::new()
        .with(EngineKind::Clamav, Arc::new(clamav))
        .with(EngineKind::Yara, Arc::new(yara));
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/h.eml", infected_message());
    step.store().insert(RAW, "submitted/i.eml", clean_message());
    let response = step
        .handle(
            batch(vec![
                sqs("m-h", &access("submitted/h.eml")),
                sqs("m-i", &access("submitted/i.eml")),
            ]),
            now(),
        )
        .await;
    assert_eq!(
        failed(&response),
        ["m-h", "m-i"],
        "neither message is acknowledged: both wait"
    );
    assert_eq!(
        step.store().writes(),
        0,
        "no record, no notice, no hand-off"
    );
    assert!(step.retained().is_empty(), "no quarantine");
    assert_eq!(
        step.metrics().engines(),
        ["clamav", "clamav"],
        "one alarm data point per message"
    );
    let error = step
        .scan_request(&access("submitted/i.eml"), now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("clamav is unavailable") && error.contains("scanned again"),
        "{error}"
    );
}

#[tokio::test]
async fn a_message_that_waited_for_its_engine_is_scanned_when_it_is_back() {
    let down = step_with(
        Engines::new()
            .with(EngineKind::Clamav, Arc::new(FakeEngine::down("clamav")))
            .with(EngineKind::Yara, Arc::new(FakeEngine::clean("yara"))),
        PolicyBook::default(),
    );
    down.store()
        .insert(RAW, "submitted/j.eml", infected_message());
    assert_eq!(
        failed(
            &down
                .handle(batch(vec![sqs("m", &access("submitted/j.eml"))]), now())
                .await
        ),
        ["m"]
    );
    assert_eq!(down.store().writes(), 0);
    // The retry (same store, engine back).
    let (_, _, engines) = fakes();
    let up = step_with(engines, PolicyBook::default());
    up.store()
        .insert(RAW, "submitted/j.eml", infected_message());
    assert!(
        failed(
            &up.handle(batch(vec![sqs("m", &access("submitted/j.eml"))]), now())
                .await
        )
        .is_empty()
    );
    assert!(
        up.store()
            .object(
                EVIDENCE,
                "unsigned/scan/submitted/j.eml/non-accettazione-virus.eml"
            )
            .is_some()
    );
}

#[tokio::test]
async fn unscannable_follows_the_tenant_policy() {
    let bomb = message(
        "bomb",
        "x",
        &[Part::attachment(
            "application/zip",
            "b.zip",
            Encoding::Base64,
            testing::zip_bomb(2048),
        )],
    );
    let mut book = PolicyBook::default();
    book.tenants.insert(
        "lenient".into(),
        ScanPolicy {
            unscannable: OnUnscannable::Accept,
            ..ScanPolicy::default()
        },
    );
    let (_, _, engines) = fakes();
    let step = step_with(engines, book);
    step.store().insert(RAW, "submitted/k.eml", bomb);

    // Default policy: treated as infected.
    let handled = step
        .scan_request(&access("submitted/k.eml"), now())
        .await
        .unwrap();
    assert!(matches!(
        handled.record.report.verdict,
        Verdict::Unscannable(_)
    ));
    let n = notice(
        &step,
        "unsigned/scan/submitted/k.eml/non-accettazione-virus.eml",
    );
    let d = classify(&n.render()).daticert.unwrap();
    assert!(
        d.dati
            .errore_esteso
            .unwrap_or_default()
            .contains("contenuto non analizzabile")
    );

    // The lenient tenant: passed on, with the warning in the hand-off.
    step.store().insert(
        RAW,
        "submitted/l.eml",
        step.store().object(RAW, "submitted/k.eml").unwrap(),
    );
    let mut request = access("submitted/l.eml");
    request.tenant = "lenient".into();
    let handled = step.scan_request(&request, now()).await.unwrap();
    assert!(
        matches!(&handled.record.decision, Decision::Pass { warning: Some(w) } if w.contains("not fully scanned"))
    );
    assert!(
        step.store()
            .object(EVIDENCE, "scan/clean/submitted/l.eml.json")
            .is_some()
    );
}

#[tokio::test]
async fn the_tenant_engine_list_is_honoured() {
    let mut book = PolicyBook::default();
    book.tenants.insert(
        "yara-only".into(),
        ScanPolicy {
            engines: vec![EngineKind::Yara],
            ..ScanPolicy::default()
        },
    );
    let (clamav, yara, engines) = fakes();
    let step = step_with(engines, book);
    step.store().insert(RAW, "submitted/m.eml", clean_message());
    let mut request = access("submitted/m.eml");
    request.tenant = "yara-only".into();
    let handled = step.scan_request(&request, now()).await.unwrap();
    assert_eq!(handled.record.report.engines, ["yara"]);
    assert_eq!((clamav.calls(), yara.calls()), (0, 1));
}

#[tokio::test]
async fn bad_requests_are_retried_and_good_ones_acknowledged() {
    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/ok.eml", clean_message());
    let mut not_json = SqsMessage::default();
    not_json.message_id = Some("m-notjson".into());
    not_json.body = Some("{{".into());
    let mut wrong_bucket = access("submitted/ok.eml");
    wrong_bucket.bucket = "elsewhere".into();
    let mut wrong_version = access("submitted/ok.eml");
    wrong_version.version = 2;
    let response = step
        .handle(
            batch(vec![
                sqs("m-ok", &access("submitted/ok.eml")),
                not_json,
                sqs("m-bucket", &wrong_bucket),
                sqs("m-version", &wrong_version),
                sqs("m-missing", &access("submitted/missing.eml")),
            ]),
            now(),
        )
        .await;
    assert_eq!(
        failed(&response),
        ["m-notjson", "m-bucket", "m-version", "m-missing"]
    );
    assert!(
        step.store()
            .object(EVIDENCE, "scan/clean/submitted/ok.eml.json")
            .is_some()
    );
}

#[tokio::test]
async fn real_yara_through_the_step() {
    let yara = YaraEngine::builtin().unwrap();
    let engines = Engines::new().with(EngineKind::Yara, Arc::new(yara));
    let mut book = PolicyBook::default();
    book.default.engines = vec![EngineKind::Yara];
    let step = step_with(engines, book);
    step.store()
        .insert(RAW, "submitted/n.eml", infected_message());
    let handled = step
        .scan_request(&access("submitted/n.eml"), now())
        .await
        .unwrap();
    assert!(
        matches!(&handled.record.report.verdict, Verdict::Infected { engine, signature, part, .. }
            if engine == "yara" && signature == "PEC_EICAR_Test_File" && part == "2.2!eicar.com"),
        "{:?}",
        handled.record.report.verdict
    );
    assert_eq!(
        keys_under(&step, "unsigned/", &handled.record.outputs.notices),
        1
    );
}

#[tokio::test]
async fn the_sign_step_signs_the_virus_notice() {
    use pec_smime::{Verdict as SigVerdict, VerifyOptions, verify_message};
    use pec_testkit::pki::TestPki;
    let (_, _, engines) = fakes();
    let step = step_with(engines, PolicyBook::default());
    step.store()
        .insert(RAW, "submitted/o.eml", infected_message());
    step.scan_request(&access("submitted/o.eml"), now())
        .await
        .unwrap();
    let key = "unsigned/scan/submitted/o.eml/non-accettazione-virus.eml";
    let unsigned = step.store().object(EVIDENCE, key).unwrap();

    let pki = TestPki::load();
    let sign = pec_pipeline::sign::SignStep::new(
        MemoryStore::new(),
        pec_ports::MemoryState::new(),
        pki.example.signer.clone(),
        pki.example.identity.clone(),
        EVIDENCE,
    );
    sign.store().insert(EVIDENCE, key, unsigned);
    // The signer checks the notice against the recorded virus verdict.
    let verdict = "scan/verdict/submitted/o.eml.json";
    sign.store().insert(
        EVIDENCE,
        verdict,
        step.store().object(EVIDENCE, verdict).unwrap(),
    );
    let out = sign.sign_object(EVIDENCE, key, now()).await.unwrap();
    assert_eq!(
        out,
        pec_pipeline::sign::Outcome::Signed {
            signed_key: "signed/scan/submitted/o.eml/non-accettazione-virus.eml".into()
        }
    );
    let signed = sign
        .store()
        .object(
            EVIDENCE,
            "signed/scan/submitted/o.eml/non-accettazione-virus.eml",
        )
        .unwrap();
    let v = verify_message(&signed, &pki.anchors, None, &VerifyOptions::default());
    assert_eq!(v.verdict, SigVerdict::Valid, "{v:?}");
    assert_eq!(classify(&signed).kind, Kind::NonAccettazione);
}

#[tokio::test]
async fn configuration_comes_from_the_evidence_bucket() {
    use pec_pipeline::scan::{DEFAULT_POLICY_KEY, SetupError, configuration};
    let store = MemoryStore::new();
    let none = pec_ports::Env::from_fn(|_| None);
    // Nothing stored: the built-in default policy and rules.
    let (book, yara) = configuration(&store, EVIDENCE, &none).await.unwrap();
    assert_eq!(book, PolicyBook::default());
    assert_eq!(
        yara.rule_count(),
        YaraEngine::builtin().unwrap().rule_count()
    );

    store.insert(
        EVIDENCE,
        DEFAULT_POLICY_KEY,
        br#"{"tenants": {"acme": {"engines": ["yara"], "unscannable": "accept"}}}"#.to_vec(),
    );
    store.insert(
        EVIDENCE,
        "config/antivirus/yara/custom.yar",
        b"rule Only_Custom { condition: filename == \"x.bin\" }".to_vec(),
    );
    let with_rules = pec_ports::Env::from_fn(|name| {
        (name == "PEC_YARA_RULES_KEY").then(|| "config/antivirus/yara/custom.yar".to_string())
    });
    let (book, yara) = configuration(&store, EVIDENCE, &with_rules).await.unwrap();
    assert_eq!(book.for_tenant("acme").engines, [EngineKind::Yara]);
    assert_eq!(book.for_tenant("acme").unscannable, OnUnscannable::Accept);
    assert_eq!(yara.rule_count(), 1);

    // A named rule file that is missing or broken, or a broken policy: refuse to start.
    let missing = pec_ports::Env::from_fn(|name| {
        (name == "PEC_YARA_RULES_KEY").then(|| "config/antivirus/yara/none.yar".to_string())
    });
    assert!(matches!(
        configuration(&store, EVIDENCE, &missing).await,
        Err(SetupError::MissingRules { .. })
    ));
    store.insert(
        EVIDENCE,
        "config/antivirus/yara/bad.yar",
        b"rule {".to_vec(),
    );
    let bad = pec_ports::Env::from_fn(|name| {
        (name == "PEC_YARA_RULES_KEY").then(|| "config/antivirus/yara/bad.yar".to_string())
    });
    assert!(matches!(
        configuration(&store, EVIDENCE, &bad).await,
        Err(SetupError::Rules(_))
    ));
    store.insert(
        EVIDENCE,
        DEFAULT_POLICY_KEY,
        br#"{"default": {"engines": []}}"#.to_vec(),
    );
    assert!(matches!(
        configuration(&store, EVIDENCE, &none).await,
        Err(SetupError::Policy { .. })
    ));
}
