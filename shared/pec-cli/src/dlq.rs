//! `pec dlq replay`: re-drive a dead-letter queue into the queue it belongs to, once the cause
//! of the failures is fixed. The steps are idempotent, so a replayed message that had in fact
//! been handled produces nothing new.

use std::process::ExitCode;

use anyhow::{Context, bail};
use pec_aws::{AwsClients, ClientSettings};

#[derive(clap::Args, Debug)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DlqCommand {
    /// Move the messages of a dead-letter queue back to its source queue.
    Replay {
        /// The dead-letter queue URL (locally: $PEC_OUTPUT_<STEP>_DEAD_LETTER_QUEUE_URL).
        dlq: String,
        /// The queue to send them to (default: the one whose redrive policy names the DLQ).
        #[arg(long)]
        to: Option<String>,
        /// At most this many messages.
        #[arg(long, default_value_t = 1000)]
        max: usize,
    },
}

pub fn run(args: DlqArgs) -> ExitCode {
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
        .and_then(|rt| rt.block_on(replay(args)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pec: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn replay(args: DlqArgs) -> anyhow::Result<()> {
    let DlqCommand::Replay { dlq, to, max } = args.command;
    let aws = AwsClients::load(&ClientSettings::from_env()?).await;
    let target = match to {
        Some(t) => t,
        None => {
            let sources = pec_aws::queue::dead_letter_sources(&aws.sqs, &dlq).await?;
            match sources.as_slice() {
                [one] => one.clone(),
                [] => bail!("no queue names {dlq} as its dead-letter queue: give --to"),
                many => bail!("several queues use {dlq} ({}): give --to", many.join(", ")),
            }
        }
    };
    let moved = pec_aws::queue::redrive(&aws.sqs, &dlq, &target, max).await?;
    println!("{moved} message(s) moved from {dlq} to {target}");
    Ok(())
}
