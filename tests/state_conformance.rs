//! The StateStore conformance suite (`pec_ports::state::conformance`) against
//! [`pec_aws::DynamoState`] on DynamoDB Local: one trial per case, on the stack's state table
//! and provider log (shared with the other tests: every case writes under its own namespace).
//! The memory store runs the same cases in `pec-ports`' `state_conformance` test.
//!
//! Two more trials (`premise::*`) check that the paging cases really span more than one
//! DynamoDB query page (1 MB) here, so their pass proves the paging code.
//!
//! Run: `cargo test -p pec-integration --test state_conformance` (reuses or starts the
//! emulators).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use aws_sdk_dynamodb::types::AttributeValue;
use libtest_mimic::{Arguments, Failed, Trial};
use pec_aws::DynamoState;
use pec_integration::{Stack, unique};
use pec_ports::state::conformance;

/// Longest a case may take (the paging cases take a few seconds on DynamoDB Local).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);

struct Ctx {
    stack: Stack,
    dynamodb: aws_sdk_dynamodb::Client,
    state: DynamoState,
    state_table: String,
    log_table: String,
    /// This run's namespace (every case adds its own name).
    ns: String,
}

/// The first page of a query on `pk` has a continuation key: the partition spans pages.
async fn spans_pages(ctx: &Ctx, table: &str, pk: &str) -> Result<()> {
    let out = ctx
        .dynamodb
        .query()
        .table_name(table)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
        .send()
        .await
        .with_context(|| format!("Query {pk} on {table}"))?;
    ensure!(
        out.last_evaluated_key().is_some_and(|k| !k.is_empty()),
        "{pk} fits in one query page ({} items): the paging case proves nothing",
        out.count()
    );
    Ok(())
}

/// Runs the conformance case `name` under its own namespace, then checks that what it wrote
/// spans more than one page.
async fn premise(ctx: &Ctx, name: &str) -> Result<()> {
    let case = conformance::cases::<DynamoState>()
        .into_iter()
        .find(|c| c.name == name)
        .with_context(|| format!("no conformance case {name}"))?;
    let run_ns = format!("{}-premise", ctx.ns);
    case.run(&ctx.state, &run_ns)
        .await
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    let case_ns = case.ns(&run_ns);
    match name {
        "log_day_pages" => {
            let pk = format!("DAY#{}", conformance::paging_day(&case_ns));
            spans_pages(ctx, &ctx.log_table, &pk).await
        }
        _ => {
            let pk = format!("MBX#{}", conformance::paging_mailbox(&case_ns));
            spans_pages(ctx, &ctx.state_table, &pk).await
        }
    }
}

fn trial(
    name: String,
    ctx: &Arc<Ctx>,
    runtime: &Arc<tokio::runtime::Runtime>,
    body: impl FnOnce(Arc<Ctx>) -> std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>>
    + Send
    + 'static,
) -> Trial {
    let (ctx, runtime) = (ctx.clone(), runtime.clone());
    Trial::test(name.clone(), move || {
        if let Some(problem) = ctx.stack.diagnose() {
            return Err(Failed::from(problem));
        }
        let start = Instant::now();
        let outcome =
            runtime.block_on(async { tokio::time::timeout(CASE_TIMEOUT, body(ctx.clone())).await });
        eprintln!("  {name}: {:.2} s", start.elapsed().as_secs_f64());
        let failure = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("timed out after {} s", CASE_TIMEOUT.as_secs()),
        };
        Err(Failed::from(match ctx.stack.diagnose() {
            Some(problem) => format!("{failure}\n{problem}"),
            None => failure,
        }))
    })
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let stack = match Stack::ensure() {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("state_conformance: cannot use the local stack: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => Arc::new(rt),
        Err(e) => {
            eprintln!("state_conformance: no tokio runtime: {e}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let tables = (
        stack.output("StateTableName").map(str::to_string),
        stack.output("ProviderLogTableName").map(str::to_string),
    );
    let (state_table, log_table) = match tables {
        (Ok(s), Ok(l)) => (s, l),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("state_conformance: {e:#}");
            stack.finish();
            return ExitCode::FAILURE;
        }
    };
    let dynamodb = runtime.block_on(stack.clients()).dynamodb;
    let ctx = Arc::new(Ctx {
        state: DynamoState::new(dynamodb.clone(), &state_table, &log_table),
        dynamodb,
        state_table,
        log_table,
        ns: unique("conf"),
        stack,
    });

    let mut trials = Vec::new();
    for case in conformance::cases::<DynamoState>() {
        trials.push(trial(case.name.to_string(), &ctx, &runtime, move |ctx| {
            Box::pin(async move {
                case.run(&ctx.state, &ctx.ns)
                    .await
                    .map_err(anyhow::Error::msg)
            })
        }));
    }
    for name in ["log_day_pages", "mailbox_items_pages"] {
        trials.push(trial(
            format!("premise::{name}_spans_pages"),
            &ctx,
            &runtime,
            move |ctx| Box::pin(async move { premise(&ctx, name).await }),
        ));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        ctx.stack.finish();
    }
    conclusion.exit_code()
}
