//! The hosts of the steps (ARCHITECTURE.md, "Layers"): how a `pec-pipeline` step meets AWS.
//!
//! - [`wiring`]: each step built from its environment ([`pec_ports::Env`]) over the `pec-aws`
//!   adapters (S3, DynamoDB, SQS, EventBridge, SES, KMS) — used by the Lambda mains and by the
//!   local runner, which passes each function its own template environment.
//! - [`run_step`]: the whole `main` of a Lambda function: telemetry, SDK clients, the step,
//!   then the Lambda runtime invoking [`Step::invoke`] per event.
//! - [`BoxedStep`]: a step behind one object type, for hosts that hold several (the runner).
//! - [`clamd_launch`]: ClamAV's daemon started at the scan function's cold start.

pub mod clamd_launch;
pub mod wiring;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use lambda_runtime::{LambdaEvent, service_fn};
use pec_aws::{AwsClients, ClientSettings};
use pec_pipeline::{Step, StepFailure};
use pec_ports::Env;
use serde_json::Value;

/// What a host's `main` returns on failure (start-up errors are reported by the runtime).
pub type Error = lambda_runtime::Error;

/// Runs one Lambda function: JSON logs, SDK clients and the step built by `build` from the
/// process environment, then every invocation through [`Step::invoke`] at the current time.
/// A step that cannot be built stops the function with the reason (Lambda reports an init error).
pub async fn run_step<B, Fut, S, E>(build: B) -> Result<(), Error>
where
    B: FnOnce(AwsClients, Env<'static>) -> Fut,
    Fut: Future<Output = Result<S, E>>,
    S: Step + 'static,
    E: Into<Error>,
{
    pec_aws::telemetry::init();
    let env = Env::process();
    let aws = AwsClients::load(&ClientSettings::from_config(&env)?).await;
    // Boxed: the step's future is deep (SDK calls inside the PEC logic); behind one pointer the
    // runtime's future stays shallow for the compiler.
    let step = BoxedStep::new(build(aws, env).await.map_err(Into::into)?);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let step = step.clone();
        async move { step.invoke(event.payload, Utc::now()).await }
    }))
    .await
}

type Invoke = dyn Fn(Value, DateTime<Utc>) -> Pin<Box<dyn Future<Output = Result<Value, StepFailure>> + Send>>
    + Send
    + Sync;

/// A step behind one type (the runner holds one per template function).
#[derive(Clone)]
pub struct BoxedStep {
    name: &'static str,
    invoke: Arc<Invoke>,
}

impl BoxedStep {
    /// Boxes `step`.
    pub fn new<S: Step + 'static>(step: S) -> Self {
        let name = step.name();
        let step = Arc::new(step);
        BoxedStep {
            name,
            invoke: Arc::new(move |event, now| {
                let step = step.clone();
                Box::pin(async move { step.invoke(event, now).await })
            }),
        }
    }

    /// The step's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One invocation, as Lambda makes it.
    pub async fn invoke(&self, event: Value, now: DateTime<Utc>) -> Result<Value, StepFailure> {
        (self.invoke)(event, now).await
    }
}
