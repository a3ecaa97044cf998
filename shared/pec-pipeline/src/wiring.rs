//! The production wiring of each step (S3, DynamoDB, SQS, EventBridge) from its environment:
//! used by the Lambda entry points and by the local runner, which passes each function its own
//! template environment through `var`.

use pec_aws::{AwsClients, DynamoState, EventBridgePublisher, S3Store, SesTransport, SqsSender};

use crate::deliver::Deliver;
use crate::ingress::Ingress;
use crate::receipts::Receipts;
use crate::{Settings, SettingsError};

fn required(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<String, SettingsError> {
    var(name)
        .filter(|v| !v.is_empty())
        .ok_or(SettingsError::Missing(name))
}

fn state(
    aws: &AwsClients,
    var: &impl Fn(&'static str) -> Option<String>,
) -> Result<DynamoState, SettingsError> {
    Ok(DynamoState::new(
        aws.dynamodb.clone(),
        &required(var, "PEC_STATE_TABLE")?,
        &required(var, "PEC_LOG_TABLE")?,
    ))
}

/// The ingress step on AWS.
pub fn ingress(
    aws: &AwsClients,
    var: impl Fn(&'static str) -> Option<String>,
) -> Result<Ingress<S3Store, DynamoState, SqsSender>, SettingsError> {
    Ok(Ingress::new(
        Settings::from_env(&var)?,
        S3Store::new(aws.s3.clone()),
        state(aws, &var)?,
        SqsSender::new(aws.sqs.clone()),
    ))
}

/// The deliver step on AWS.
pub fn deliver(
    aws: &AwsClients,
    var: impl Fn(&'static str) -> Option<String>,
) -> Result<
    Deliver<S3Store, DynamoState, SqsSender, EventBridgePublisher, SesTransport>,
    SettingsError,
> {
    Ok(Deliver::new(
        Settings::from_env(&var)?,
        S3Store::new(aws.s3.clone()),
        state(aws, &var)?,
        SqsSender::new(aws.sqs.clone()),
        EventBridgePublisher::new(aws.events.clone(), &required(&var, "PEC_EVENT_BUS")?),
        SesTransport::new(aws.ses.clone()),
    ))
}

/// The receipts step on AWS.
pub fn receipts(
    aws: &AwsClients,
    var: impl Fn(&'static str) -> Option<String>,
) -> Result<Receipts<S3Store, DynamoState>, SettingsError> {
    Ok(Receipts::new(
        Settings::from_env(&var)?,
        S3Store::new(aws.s3.clone()),
        state(aws, &var)?,
    ))
}

/// The timers sweep on AWS.
pub fn timers(
    aws: &AwsClients,
    var: impl Fn(&'static str) -> Option<String>,
) -> Result<crate::timers::Timers<S3Store, DynamoState>, SettingsError> {
    Ok(crate::timers::Timers::new(
        Settings::from_env(&var)?,
        S3Store::new(aws.s3.clone()),
        state(aws, &var)?,
    ))
}
