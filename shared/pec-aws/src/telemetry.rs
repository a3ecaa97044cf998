//! Structured logs for the functions: one JSON object per line, level from `RUST_LOG`.

/// Installs the JSON subscriber (once; later calls do nothing).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_current_span(false)
        .with_target(false)
        .try_init();
}
