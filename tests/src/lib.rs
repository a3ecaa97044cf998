//! Harness for the integration tests that run against the local emulators.
//!
//! [`Stack::ensure`] reuses this clone's running emulators (started by `infra/local/stack.sh`)
//! or starts and bootstraps them itself; [`Stack::finish`] stops only what it started. Every
//! failure is reported with [`Stack::diagnose`], which says which emulator stopped answering and
//! shows the end of its log, so a dead emulator is a clear failure, never a hang.
//!
//! For end-to-end checks of the pipeline, [`Provisioned`] adds what a deployment needs on top of
//! the stack (the binaries built once, clamd, the provider certificate for the KMS key, a
//! tenant) and [`Runner`] runs `pec-runner` as a child process that is always stopped.

pub mod dovecot;
pub mod mailgen;

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
        pec_aws::AwsClients::load(
            &pec_aws::ClientSettings::from_env().expect("SDK settings from the environment"),
        )
        .await
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
/// The SMS digest window of every runner the tests start.
pub const SMS_DIGEST_SECONDS: u64 = 30;

/// The SMS LocalStack's SNS recorded for `number` (E.164): each one's text, oldest first.
pub fn sms_sent_to(localstack_port: u16, number: &str) -> Result<Vec<String>> {
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "eu-south-1".into());
    let path = format!(
        "/_aws/sns/sms-messages?region={region}&phoneNumber={}",
        number.replace('+', "%2B")
    );
    let raw = http_get(localstack_port, &path, Duration::from_secs(10))?;
    let v: serde_json::Value = serde_json::from_slice(&raw).context("LocalStack's SMS log")?;
    Ok(v["sms_messages"][number]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["Message"].as_str().map(str::to_string))
        .collect())
}

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

// ------------------------------------------------------------------ end-to-end provisioning

/// The workspace binaries the end-to-end checks run.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `pec` command.
    pub pec: PathBuf,
    /// `pec-runner`, the local stand-in for Lambda (and the SMTP gateway's host).
    pub runner: PathBuf,
}

impl Binaries {
    /// Builds (or finds up to date) `pec` and `pec-runner` in one cargo call, before any check
    /// starts, so no check runs a stale copy and no check's timeout covers a build. They land
    /// beside the test binary (`target/<profile>/`), wherever `CARGO_TARGET_DIR` points.
    pub fn build() -> Result<Binaries> {
        let exe = std::env::current_exe()?;
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .context("the test binary has no target dir")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        // pec-integration in the selection: cargo unifies features over the selected packages, so
        // this build compiles the dependencies exactly as the enclosing `cargo test` did
        // (infra/local/lib.sh, `pec_build_binaries`) instead of a second copy of each.
        cmd.args([
            "build",
            "-q",
            "-p",
            "pec-cli",
            "-p",
            "pec-runner",
            "-p",
            "pec-integration",
            "--bins",
        ])
        .current_dir(repo_root());
        // Cargo gives this test process its package's variables (CARGO_PKG_NAME, ...). Build
        // scripts such as ring's watch them (`rerun-if-env-changed`): passed on, they would make
        // this build and the enclosing `cargo test` rebuild ring and everything above it, in
        // turn, at every run.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| name.starts_with(p))
                || name == "CARGO_TARGET_TMPDIR"
            {
                cmd.env_remove(name.as_ref());
            }
        }
        let status = cmd.status().context("running cargo build")?;
        if !status.success() {
            bail!("cargo build -p pec-cli -p pec-runner failed");
        }
        let binaries = Binaries {
            pec: dir.join("pec"),
            runner: dir.join("pec-runner"),
        };
        for path in [&binaries.pec, &binaries.runner] {
            if !path.exists() {
                bail!("{} was not built", path.display());
            }
        }
        Ok(binaries)
    }
}

/// A daemon of this clone that a script under `infra/local/` runs in the stack's state
/// directory (`clamd.sh`, `rspamd.sh`: start, status, stop, and `env`, which prints the one
/// `export NAME=value` the functions need), reused or started; [`Daemon::finish`] stops it
/// only if this run started it.
#[derive(Debug)]
pub struct Daemon {
    script: &'static str,
    /// The variable `env` exports (`PEC_CLAMD_SOCKET`, `PEC_SPAM_URL`) and its value.
    pub var: &'static str,
    pub value: String,
    state_dir: PathBuf,
    started_here: bool,
}

impl Daemon {
    fn script(script: &str, state_dir: &Path, command: &str) -> Result<String> {
        let out = Command::new("bash")
            .arg(repo_root().join("infra/local").join(script))
            .arg(command)
            .env("PEC_STATE_DIR", state_dir)
            .output()
            .with_context(|| format!("running infra/local/{script} {command}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!("infra/local/{script} {command} failed:\n{text}");
        }
        Ok(text)
    }

    fn ensure(stack: &Stack, script: &'static str, var: &'static str) -> Result<Daemon> {
        let state_dir = stack.state_dir.clone();
        let started_here = Self::script(script, &state_dir, "status").is_err();
        if started_here {
            Self::script(script, &state_dir, "start")
                .with_context(|| format!("starting infra/local/{script}"))?;
        }
        let prefix = format!("export {var}=");
        let value = Self::script(script, &state_dir, "env")?
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(|v| unquote(v.trim())))
            .with_context(|| format!("{script} env printed no {var}"))?;
        Ok(Daemon {
            script,
            var,
            value,
            state_dir,
            started_here,
        })
    }

    /// clamd (`infra/local/clamd.sh`; install: `infra/local/install.sh clamav`): its socket is
    /// `PEC_CLAMD_SOCKET` for the scan step.
    pub fn clamd(stack: &Stack) -> Result<Daemon> {
        Self::ensure(stack, "clamd.sh", "PEC_CLAMD_SOCKET")
    }

    /// rspamd (`infra/local/rspamd.sh`; install: `infra/local/install.sh spam`): its URL is
    /// `PEC_SPAM_URL` for the scan step.
    pub fn rspamd(stack: &Stack) -> Result<Daemon> {
        Self::ensure(stack, "rspamd.sh", "PEC_SPAM_URL")
    }

    /// Stops the daemon if this run started it.
    pub fn finish(self) {
        if self.started_here {
            let _ = Self::script(self.script, &self.state_dir, "stop");
        }
    }
}

/// The provider's signing certificate, as an operator sets it up once (infra/demo.sh): a
/// development CA, a provider certificate for the KMS key (`pec cert issue --kms-key-id`), and
/// the chain uploaded where the sign function reads it (`PEC_SIGNING_CHAIN_KEY`).
pub struct ProviderPki {
    dir: tempfile::TempDir,
    /// The development CA certificate (the trust anchor of every provider signature).
    pub ca_pem: PathBuf,
    /// The same CA for `pec_smime::verify_message`.
    pub anchors: pec_smime::TrustAnchors,
}

impl ProviderPki {
    /// Where the CA, key and certificates are (a temporary directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Certifies the stack's signing key and uploads the chain.
    pub async fn certify(
        stack: &Stack,
        aws: &pec_aws::AwsClients,
        binaries: &Binaries,
    ) -> Result<ProviderPki> {
        let dir = tempfile::tempdir()?;
        let d = dir.path();
        let key_id = stack.function_env("SignFunction", "PEC_SIGNING_KEY_ID")?;
        let chain_key = stack.function_env("SignFunction", "PEC_SIGNING_CHAIN_KEY")?;
        let domain = stack.function_env("SignFunction", "PEC_PROVIDER_DOMAIN")?;
        let provider = stack.function_env("SignFunction", "PEC_PROVIDER_NAME")?;
        run_output(
            Command::new(&binaries.pec)
                .args([
                    "cert",
                    "dev-ca",
                    "--name",
                    "PEC integration CA",
                    "--out-dir",
                ])
                .arg(d),
        )?;
        run_output(
            Command::new(&binaries.pec)
                .args(["cert", "issue", "--ca-cert"])
                .arg(d.join("ca.pem"))
                .arg("--ca-key")
                .arg(d.join("ca.key.pem"))
                .args(["--kms-key-id", key_id, "--provider", provider])
                .args(["--domain", domain, "--out"])
                .arg(d.join("provider.pem")),
        )?;
        let ca = std::fs::read(d.join("ca.pem"))?;
        let mut chain = std::fs::read(d.join("provider.pem"))?;
        chain.extend_from_slice(&ca);
        aws.s3
            .put_object()
            .bucket(stack.output("EvidenceBucketName")?)
            .key(chain_key)
            .body(chain.into())
            .send()
            .await
            .context("uploading the provider certificate chain")?;
        let mut anchors = pec_smime::TrustAnchors::new();
        anchors.add_pem_bundle(&ca)?;
        Ok(ProviderPki {
            ca_pem: d.join("ca.pem"),
            dir,
            anchors,
        })
    }
}

/// Runs `cmd` to completion; its standard output, or an error with its standard error.
pub fn run_output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A `pec-runner` child process, its output in two files: `<name>.log` (the functions' JSON
/// logs, standard output) and `<name>.stderr` (the runner's own lines: what it polls, the SMTP
/// address, panics). Kept apart because the runner writes its lines unbuffered, piece by
/// piece, while its pollers log: in one file, a JSON line can land in the middle of one.
///
/// Dropping it stops it (SIGTERM, then SIGKILL if it has not stopped within
/// [`Runner::STOP_GRACE`]), so no check leaves one behind, even when it fails.
pub struct Runner {
    child: std::process::Child,
    /// The functions' logs (standard output).
    pub log: PathBuf,
    /// The runner's own lines (standard error).
    pub stderr: PathBuf,
    /// The SMTP gateway's address, when started with `--smtp-port`.
    pub smtp: Option<SocketAddr>,
}

impl Runner {
    /// How long a graceful stop may take before the runner is killed.
    pub const STOP_GRACE: Duration = Duration::from_secs(45);

    /// Starts `pec-runner --state-dir <stack's> ARGS` with the daemons' variables
    /// (`PEC_CLAMD_SOCKET`, `PEC_SPAM_URL`) for the scan step, its output in `<dir>/<name>.log` and `<dir>/<name>.stderr`. With `--smtp-port` in
    /// `args`, waits until the gateway listens and records its address.
    pub fn start(
        binaries: &Binaries,
        stack: &Stack,
        daemons: &[&Daemon],
        args: &[&str],
        dir: &Path,
        name: &str,
    ) -> Result<Runner> {
        let log = dir.join(format!("{name}.log"));
        let stderr = dir.join(format!("{name}.stderr"));
        let create = |path: &Path| {
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))
        };
        let mut cmd = Command::new(&binaries.runner);
        cmd.arg("--state-dir")
            .arg(&stack.state_dir)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(create(&log)?)
            .stderr(create(&stderr)?);
        for d in daemons {
            cmd.env(d.var, &d.value);
        }
        // The SMS digest window (600 s in the template) short enough for a test to see a
        // digest: tests/pipeline.rs sms_notifications_end_to_end.
        cmd.env("PEC_SMS_DIGEST_SECONDS", SMS_DIGEST_SECONDS.to_string());
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binaries.runner.display()))?;
        let mut runner = Runner {
            child,
            log,
            stderr,
            smtp: None,
        };
        if args.contains(&"--smtp-port") {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(addr) = runner
                    .messages()
                    .lines()
                    .find_map(|l| l.strip_prefix("pec-runner: smtp "))
                    .and_then(|a| a.trim().parse().ok())
                {
                    runner.smtp = Some(addr);
                    break;
                }
                if let Some(status) = runner.child.try_wait()? {
                    bail!(
                        "pec-runner exited ({status}) before its gateway listened:\n{}",
                        indent(&runner.log_tail(30))
                    );
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "pec-runner printed no smtp address within 60 s:\n{}",
                        indent(&runner.log_tail(30))
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(runner)
    }

    /// The runner's own lines so far (standard error).
    pub fn messages(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default()).into_owned()
    }

    /// The functions' logs so far (standard output, JSON lines).
    pub fn logs(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until the runner polls `queues` queues (it prints `pec-runner: <function> <-
    /// <queue>` for each as its poller starts).
    pub fn wait_polling(&mut self, queues: usize, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let polling = self
                .messages()
                .lines()
                .filter(|l| l.starts_with("pec-runner: ") && l.contains(" <- "))
                .count();
            if polling >= queues {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "pec-runner exited ({status}) during start-up:\n{}",
                    indent(&self.log_tail(30))
                );
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "pec-runner polls {polling} of {queues} queues after {} s:\n{}",
                    timeout.as_secs(),
                    indent(&self.log_tail(30))
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, no grace (a crash, a Lambda timeout), and reap.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for the graceful stop (SIGKILL after [`Runner::STOP_GRACE`]); the
    /// exit status, `None` when it had to be killed.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Self::STOP_GRACE;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill_hard();
        None
    }

    /// Its standard error and the last `lines` lines of its logs, for a failure message.
    pub fn log_tail(&self, lines: usize) -> String {
        format!(
            "{}:\n{}\n{}:\n{}",
            self.stderr.display(),
            tail(&self.stderr, lines),
            self.log.display(),
            tail(&self.log, lines)
        )
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything an end-to-end check of the pipeline needs, set up once: the stack, SDK clients,
/// the binaries, clamd, rspamd, the provider certificate and a tenant.
pub struct Provisioned {
    pub stack: Stack,
    pub aws: pec_aws::AwsClients,
    pub binaries: Binaries,
    pub clamd: Daemon,
    /// rspamd: every runner's scan step scores spam with it.
    pub rspamd: Daemon,
    pub pki: ProviderPki,
    /// The tenant every mailbox of the run belongs to.
    pub tenant: String,
    /// The provider's domain (`PEC_PROVIDER_DOMAIN`): mailboxes there are ours.
    pub domain: String,
    /// The state table and provider log, as the steps see them.
    pub state: pec_aws::DynamoState,
    /// Where runner logs go: `<state dir>/test-logs/<run name>/`, emptied when a run starts
    /// and kept after it, for diagnosis.
    pub log_dir: PathBuf,
}

impl HasStack for Provisioned {
    fn stack(&self) -> &Stack {
        &self.stack
    }
}

/// The submission password of every mailbox the checks create.
pub const MAILBOX_PASSWORD: &str = "integration-secret-1";

impl Provisioned {
    /// Starts (or reuses) clamd, certifies the signing key and creates `tenant`; `name` names
    /// the log directory. On failure, whatever this run started (stack, clamd) is stopped.
    pub async fn new(
        stack: Stack,
        binaries: Binaries,
        name: &str,
        tenant: &str,
    ) -> Result<Provisioned> {
        let clamd = match Daemon::clamd(&stack) {
            Ok(c) => c,
            Err(e) => {
                stack.finish();
                return Err(e);
            }
        };
        let rspamd = match Daemon::rspamd(&stack) {
            Ok(r) => r,
            Err(e) => {
                clamd.finish();
                stack.finish();
                return Err(e);
            }
        };
        let aws = stack.clients().await;
        let rest = async {
            let pki = ProviderPki::certify(&stack, &aws, &binaries).await?;
            let domain = stack
                .function_env("IngressFunction", "PEC_PROVIDER_DOMAIN")?
                .to_string();
            let state = pec_aws::DynamoState::new(
                aws.dynamodb.clone(),
                stack.output("StateTableName")?,
                stack.output("ProviderLogTableName")?,
            );
            let log_dir = stack.state_dir.join("test-logs").join(name);
            if log_dir.exists() {
                std::fs::remove_dir_all(&log_dir)
                    .with_context(|| format!("emptying {}", log_dir.display()))?;
            }
            std::fs::create_dir_all(&log_dir)?;
            Ok::<_, anyhow::Error>((pki, domain, state, log_dir))
        }
        .await;
        let (pki, domain, state, log_dir) = match rest {
            Ok(v) => v,
            Err(e) => {
                clamd.finish();
                rspamd.finish();
                stack.finish();
                return Err(e);
            }
        };
        let p = Provisioned {
            stack,
            aws,
            binaries,
            clamd,
            rspamd,
            pki,
            tenant: tenant.to_string(),
            domain,
            state,
            log_dir,
        };
        if let Err(e) = p
            .pec(
                &["tenant", "add", tenant, "--name", "Integration tests"],
                None,
            )
            .await
        {
            p.finish();
            return Err(e);
        }
        Ok(p)
    }

    /// Runs the `pec` command (in this process's environment: the stack's), `stdin` on its
    /// standard input; its standard output.
    pub async fn pec(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use tokio::io::AsyncWriteExt;
        let mut child = tokio::process::Command::new(&self.binaries.pec)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting pec {args:?}"))?;
        let mut input = child.stdin.take().context("pec stdin")?;
        input
            .write_all(stdin.unwrap_or_default().as_bytes())
            .await?;
        drop(input);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "pec {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// An address of our domain that no one has used: `<tag>-<pid>-<nanos>@<domain>` (for a
    /// given tag, always the same length).
    pub fn address(&self, tag: &str) -> String {
        format!("{}@{}", unique(tag), self.domain)
    }

    /// `pec mailbox create` (standard plan, or `quota_bytes`) with [`MAILBOX_PASSWORD`].
    pub async fn create_mailbox(&self, address: &str, quota_bytes: Option<u64>) -> Result<()> {
        let quota = quota_bytes.map(|q| q.to_string());
        let mut args = vec![
            "mailbox",
            "create",
            address,
            "--tenant",
            &self.tenant,
            "--plan",
            "standard",
            "--password-stdin",
            "--fast-hash",
        ];
        if let Some(q) = &quota {
            args.extend(["--quota-bytes", q]);
        }
        self.pec(&args, Some(&format!("{MAILBOX_PASSWORD}\n")))
            .await
            .map(drop)
    }

    /// Starts `pec-runner ARGS` on this stack with clamd; its output in
    /// `<log_dir>/<name>.{log,stderr}`.
    pub fn runner(&self, name: &str, args: &[&str]) -> Result<Runner> {
        Runner::start(
            &self.binaries,
            &self.stack,
            &[&self.clamd, &self.rspamd],
            args,
            &self.log_dir,
            name,
        )
    }

    /// Stops what this run started (clamd, the emulators).
    pub fn finish(self) {
        self.clamd.finish();
        self.rspamd.finish();
        self.stack.finish();
    }
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
