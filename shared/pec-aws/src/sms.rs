//! [`SnsSms`]: the [`SmsSender`] port on Amazon SNS (`Publish` to a phone number, transactional).
//!
//! SNS refuses a number that is not E.164 or one that opted out (`InvalidParameter*`,
//! `OptedOut`): [`SmsError::Refused`], never retried. Throttling, timeouts and anything else: [`SmsError::Unavailable`] (the SDK
//! has retried already; the step's queue retries again). In AWS the account's SMS sandbox,
//! spending limit and origination identity are the operator's (docs/sms.md); locally LocalStack
//! records what would be sent (`GET /_aws/sns/sms-messages`).

use aws_sdk_sns::types::MessageAttributeValue;
use pec_ports::sms::{SmsError, SmsSender};

use crate::store::aws_error_chain;

/// SMS through SNS.
#[derive(Clone)]
pub struct SnsSms {
    client: aws_sdk_sns::Client,
    /// The alphanumeric sender id shown on phones where the country allows it (e.g. the
    /// provider's brand, at most 11 characters); `None`: the account's default.
    sender_id: Option<String>,
}

impl SnsSms {
    pub fn new(client: aws_sdk_sns::Client, sender_id: Option<String>) -> Self {
        Self { client, sender_id }
    }
}

fn attribute(value: &str) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .expect("data type set")
}

impl SmsSender for SnsSms {
    async fn send(&self, number: &str, text: &str) -> Result<String, SmsError> {
        let mut request = self
            .client
            .publish()
            .phone_number(number)
            .message(text)
            .message_attributes("AWS.SNS.SMS.SMSType", attribute("Transactional"));
        if let Some(id) = &self.sender_id {
            request = request.message_attributes("AWS.SNS.SMS.SenderID", attribute(id));
        }
        match request.send().await {
            Ok(out) => Ok(out.message_id().unwrap_or_default().to_string()),
            Err(e) => {
                // An AuthorizationError is our role (an IAM mistake), not the number: retried,
                // so it ends in the dead-letter queue and its alarm rather than vanishing.
                let refused = e.as_service_error().is_some_and(|s| {
                    s.is_invalid_parameter_exception()
                        || s.is_invalid_parameter_value_exception()
                        || s.meta().code() == Some("OptedOut")
                });
                let message = aws_error_chain(&e);
                Err(if refused {
                    SmsError::Refused(message)
                } else {
                    SmsError::Unavailable(message)
                })
            }
        }
    }
}
