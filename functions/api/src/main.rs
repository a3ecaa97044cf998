//! Lambda entry point of the integration API (`pec_api::router`), behind API Gateway's HTTP API.
//!
//! The environment it reads is listed on `pec_api::aws::app` (template.yaml sets it); the
//! caller's address comes from API Gateway's request context (`requestContext.http.sourceIp`).

use lambda_http::request::RequestContext;
use lambda_http::{Error, RequestExt};
use pec_aws::{AwsClients, ClientSettings};
use pec_ports::Env;

#[tokio::main]
async fn main() -> Result<(), Error> {
    pec_aws::telemetry::init();
    let env = Env::process();
    let aws = AwsClients::load(&ClientSettings::from_config(&env)?).await;
    let app = pec_api::aws::app(&aws, &env)?;
    let router = pec_api::router(app).layer(axum::middleware::from_fn(
        |mut req: axum::extract::Request, next: axum::middleware::Next| async move {
            if let Some(RequestContext::ApiGatewayV2(ctx)) = req.request_context_ref() {
                let ip = ctx.http.source_ip.clone().unwrap_or_default();
                req.extensions_mut().insert(pec_api::auth::ClientIp(ip));
            }
            next.run(req).await
        },
    ));
    lambda_http::run(router).await
}
