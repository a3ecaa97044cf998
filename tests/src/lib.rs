//! Harness for the integration tests that run against the local emulators.
//!
//! [`Stack::ensure`] reuses this clone's running emulators (started by `infra/local/stack.sh`)
//! or starts and bootstraps them itself; [`Stack::finish`] stops only what it started. Every
//! failure is reported with [`Stack::diagnose`], which says which emulator stopped answering and
//! shows the end of its log, so a dead emulator is a clear failure, never a hang.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use libtest_mimic::{Arguments, Conclusion, Failed, Trial};

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The stack name the bootstrap uses for this provider's resources.
pub const STACK_NAME: &str = "pec-local";

/// One emulator process as `infra/local/stack.sh` describes it.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub name: &'static str,
    pub port: u16,
    pub pid: Option<u32>,
    pub log: PathBuf,
}

impl Emulator {
    /// Answers an HTTP request within two seconds (or says why not).
    pub fn probe(&self) -> Result<()> {
        http_get(self.port, "/", Duration::from_secs(2)).map(drop)
    }

    /// Why the emulator is not usable, with the end of its log; `None` if it answers.
    pub fn problem(&self) -> Option<String> {
        let probe_error = self.probe().err()?;
        let process = match self.pid {
            Some(pid) if process_running(pid) => {
                format!("its process {pid} is still there but does not answer")
            }
            Some(pid) => format!("its process {pid} is gone (stopped or crashed)"),
            None => "no pid recorded".to_string(),
        };
        Some(format!(
            "{} on 127.0.0.1:{} is not answering ({probe_error:#}): {}.\n  log: {}\n{}",
            self.name,
            self.port,
            process,
            self.log.display(),
            indent(&tail(&self.log, 25))
        ))
    }
}

/// The local stack as seen by a test: emulators, SDK environment and the bootstrap's outputs.
#[derive(Debug)]
pub struct Stack {
    pub state_dir: PathBuf,
    pub localstack: Emulator,
    pub dynamodb: Emulator,
    /// `export` lines of stack.env and `<stack>.env`, applied to this process by [`Stack::ensure`].
    pub env: BTreeMap<String, String>,
    /// Template outputs resolved by the bootstrap (`<stack>.resources.json`).
    pub outputs: BTreeMap<String, String>,
    /// Each function's environment as Lambda would get it (logical id -> variables).
    pub functions: BTreeMap<String, BTreeMap<String, String>>,
    started_here: bool,
}

impl Stack {
    /// Reuse the running emulators of this clone, or start them (and bootstrap the template).
    ///
    /// Call before any thread is spawned: it exports the SDK environment into this process.
    pub fn ensure() -> Result<Stack> {
        let state_dir = std::env::var_os("PEC_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".local/stack"));
        let script = repo_root().join("infra/local/stack.sh");
        let healthy = Command::new(&script)
            .arg("status")
            .env("PEC_STATE_DIR", &state_dir)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        let started_here = !healthy;
        if started_here {
            eprintln!(
                "harness: no running local stack in {}; starting one",
                state_dir.display()
            );
            run(Command::new(&script)
                .arg("start")
                .env("PEC_STATE_DIR", &state_dir))?;
        }
        // Bootstrapping is idempotent: it also makes a reused stack match the current template.
        run(Command::new(&script)
            .args(["bootstrap", "--stack-name", STACK_NAME])
            .env("PEC_STATE_DIR", &state_dir))?;

        let mut env = read_exports(&state_dir.join("stack.env"))?;
        env.extend(read_exports(&state_dir.join(format!("{STACK_NAME}.env")))?);
        let resources: serde_json::Value = serde_json::from_slice(
            &std::fs::read(state_dir.join(format!("{STACK_NAME}.resources.json")))
                .context("reading the bootstrap's resources file")?,
        )?;
        let outputs = resources["outputs"]
            .as_object()
            .context("resources file has no outputs")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
            .collect();
        let functions = resources["functions"]
            .as_object()
            .map(|fns| {
                fns.iter()
                    .map(|(name, f)| {
                        let vars = f["environment"]
                            .as_object()
                            .map(|vars| {
                                vars.iter()
                                    .map(|(k, v)| {
                                        (k.clone(), v.as_str().unwrap_or_default().to_string())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                        (name.clone(), vars)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for (k, v) in &env {
            // SAFETY: called at start-up, before the harness spawns any thread.
            unsafe { std::env::set_var(k, v) };
        }
        // Fail fast against a dead emulator instead of waiting out default timeouts.
        for (k, v) in [
            ("PEC_AWS_CONNECT_TIMEOUT_MS", "2000"),
            ("PEC_AWS_OPERATION_TIMEOUT_MS", "20000"),
            ("PEC_AWS_MAX_ATTEMPTS", "2"),
        ] {
            if std::env::var_os(k).is_none() {
                // SAFETY: as above.
                unsafe { std::env::set_var(k, v) };
            }
        }
        let emulator = |name: &'static str, url_var: &str, pid_var: &str, log_var: &str| {
            let port = env
                .get(url_var)
                .and_then(|u| u.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .with_context(|| format!("{url_var} missing from stack.env"))?;
            Ok::<_, anyhow::Error>(Emulator {
                name,
                port,
                pid: env.get(pid_var).and_then(|p| p.parse().ok()),
                log: env.get(log_var).map(PathBuf::from).unwrap_or_default(),
            })
        };
        let stack = Stack {
            localstack: emulator(
                "LocalStack",
                "AWS_ENDPOINT_URL",
                "PEC_LOCALSTACK_PID",
                "PEC_LOCALSTACK_LOG",
            )?,
            dynamodb: emulator(
                "DynamoDB Local",
                "AWS_ENDPOINT_URL_DYNAMODB",
                "PEC_DYNAMODB_PID",
                "PEC_DYNAMODB_LOG",
            )?,
            state_dir,
            env,
            outputs,
            functions,
            started_here,
        };
        if let Some(problem) = stack.diagnose() {
            bail!("the local stack is not usable:\n{problem}");
        }
        eprintln!(
            "harness: LocalStack on 127.0.0.1:{}, DynamoDB Local on 127.0.0.1:{} ({})",
            stack.localstack.port,
            stack.dynamodb.port,
            if stack.started_here {
                "started by this run"
            } else {
                "reused"
            }
        );
        Ok(stack)
    }

    /// A template output by name (e.g. `IngressQueueUrl`).
    pub fn output(&self, name: &str) -> Result<&str> {
        self.outputs
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("template output {name} not found"))
    }

    /// One variable of a function's environment (e.g. `SignFunction`, `PEC_SIGNING_CHAIN_KEY`).
    pub fn function_env(&self, function: &str, name: &str) -> Result<&str> {
        self.functions
            .get(function)
            .and_then(|vars| vars.get(name))
            .map(String::as_str)
            .with_context(|| format!("{function} has no environment variable {name}"))
    }

    /// Every emulator that does not answer, with its log tail; `None` when all answer.
    pub fn diagnose(&self) -> Option<String> {
        let problems: Vec<String> = [&self.localstack, &self.dynamodb]
            .into_iter()
            .filter_map(Emulator::problem)
            .collect();
        (!problems.is_empty()).then(|| problems.join("\n"))
    }

    /// SDK clients configured from the environment this harness exported.
    pub async fn clients(&self) -> pec_aws::AwsClients {
        pec_aws::AwsClients::load(&pec_aws::ClientSettings::from_env()).await
    }

    /// Stops the emulators if this run started them.
    pub fn finish(self) {
        if self.started_here {
            let _ = Command::new(repo_root().join("infra/local/stack.sh"))
                .arg("stop")
                .env("PEC_STATE_DIR", &self.state_dir)
                .status();
        }
    }
}

/// A name unique to this process and moment, for keys and ids that must not collide.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Anything that holds the [`Stack`] a check runs against.
pub trait HasStack: Send + Sync + 'static {
    fn stack(&self) -> &Stack;
}

impl HasStack for Stack {
    fn stack(&self) -> &Stack {
        self
    }
}

/// An async check over a shared context.
pub type Check<C> = fn(Arc<C>) -> Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// `checks![a, b]`: the table of named checks for [`run_checks`], each named after its function.
#[macro_export]
macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        &[$((stringify!($check), |c| Box::pin($check(c)))),*]
    };
}

/// Runs `checks` as libtest trials, `rounds` times each (named `roundN::check` when > 1).
///
/// A check whose emulator died fails at once with the emulator's name and log; a check that
/// fails or exceeds `timeout` gets the same diagnosis appended.
pub fn run_checks<C: HasStack>(
    args: &Arguments,
    ctx: Arc<C>,
    runtime: Arc<tokio::runtime::Runtime>,
    checks: &[(&'static str, Check<C>)],
    rounds: usize,
    timeout: Duration,
) -> Conclusion {
    let mut trials = Vec::new();
    for round in 0..rounds {
        for (name, check) in checks {
            let (ctx, runtime, check) = (ctx.clone(), runtime.clone(), *check);
            let name = if rounds == 1 {
                (*name).to_string()
            } else {
                format!("round{round}::{name}")
            };
            trials.push(Trial::test(name, move || {
                if let Some(problem) = ctx.stack().diagnose() {
                    return Err(Failed::from(problem));
                }
                let outcome = runtime
                    .block_on(async { tokio::time::timeout(timeout, check(ctx.clone())).await });
                let failure = match outcome {
                    Ok(Ok(())) => return Ok(()),
                    Ok(Err(e)) => format!("{e:#}"),
                    Err(_) => format!("timed out after {} s", timeout.as_secs()),
                };
                Err(Failed::from(match ctx.stack().diagnose() {
                    Some(problem) => format!("{failure}\n{problem}"),
                    None => failure,
                }))
            }));
        }
    }
    libtest_mimic::run(args, trials)
}

/// `GET path` on 127.0.0.1:port over plain HTTP/1.0; returns the body of a 2xx response.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<Vec<u8>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: LocalStack serves HTTP and TLS on one port and sniffs the first segment, so a
    // request split over several small writes can be taken for TLS and the connection dropped.
    let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let status = String::from_utf8_lossy(&response[..head_end]);
    let code: u16 = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status")?;
    // DynamoDB Local answers 400 to a bare GET: it is alive, which is all a probe needs.
    if code >= 500 {
        bail!("HTTP {code}");
    }
    Ok(response[head_end + 4..].to_vec())
}

/// A live process (a zombie, killed but not yet reaped, counts as gone).
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // Field 3 (state) follows the parenthesised command name, which may contain spaces.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn read_exports(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} (is the local stack started?)", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), unquote(v)))
        .collect())
}

/// Undoes Python's `shlex.quote` (single quotes, `'"'"'` for a quote inside).
fn unquote(v: &str) -> String {
    match v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
        Some(inner) => inner.replace("'\"'\"'", "'"),
        None => v.to_string(),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read the log: {e})"),
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  | {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::unquote;

    #[test]
    fn unquote_reverses_shell_quoting() {
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(
            unquote("'Example Gestore PEC S.p.A.'"),
            "Example Gestore PEC S.p.A."
        );
        assert_eq!(unquote("'it'\"'\"'s'"), "it's");
    }
}
