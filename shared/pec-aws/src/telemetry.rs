//! Structured logs for the functions: one JSON object per line, level from `RUST_LOG`.

/// Installs the JSON subscriber (once; later calls do nothing). Without `RUST_LOG`: `info`.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .try_init();
}
