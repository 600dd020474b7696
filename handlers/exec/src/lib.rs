//! `kind = "exec"`: run any program for each event — how a clinic writes a handler in Python,
//! PHP or anything else.
//!
//! The contract with the program:
//! - **stdin**: the event as JSON (the canonical [`Event`]; redacted for `phi = "none"`).
//! - **arguments**: the configured templates, rendered; each is one argument (no shell).
//! - **environment**: cleared, then `pass_env` names copied from wardhook's environment, `env`,
//!   resolved `secret_env`, and `WARDHOOK_HANDLER`, `WARDHOOK_IDEMPOTENCY_KEY`,
//!   `WARDHOOK_ATTEMPT`.
//! - **exit status**: 0 = done, 75 (`EX_TEMPFAIL`) = try again later, anything else = permanent.
//! - **stdout**: if it is JSON, captured as `app_data.<name>.data` for later handlers. stderr is
//!   discarded: it may hold patient data and wardhook logs no payload.
//! - **timeout**: the program runs in its own process group; at the timeout the whole group is
//!   killed (SIGKILL), children included, and the attempt is retryable. The group is also
//!   killed after a normal exit, so nothing it left behind outlives the attempt.
#![forbid(unsafe_code)]

pub mod config;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use wardhook_sdk::template::{Escape, Template};
use wardhook_sdk::{
    async_trait, BuildContext, ConfigProblem, Context, Event, Handler, HandlerError,
    HandlerFactory, Outcome, Problems, SecretValue,
};

pub use crate::config::ExecConfig;

/// The exit status that asks for a retry (sysexits `EX_TEMPFAIL`).
pub const EXIT_RETRY: i32 = 75;
/// The most stdout read (and captured).
const MAX_STDOUT_BYTES: usize = 1024 * 1024;

/// Registers `kind = "exec"`.
#[derive(Debug)]
pub struct ExecFactory;

impl HandlerFactory for ExecFactory {
    type Config = ExecConfig;

    fn build(
        config: ExecConfig,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
        let mut p = Problems::new();
        let program = ctx.resolve_path(&config.program);
        match std::fs::metadata(&program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => p.push(ConfigProblem::new("program", "is not an executable file")),
            Err(e) => p.push(ConfigProblem::new(
                "program",
                format!("cannot use {}: {}", config.program.display(), e.kind()),
            )),
        }
        let mut args = Vec::new();
        for (i, a) in config.args.iter().enumerate() {
            if let Some(t) = p.take(ctx.template(&format!("args[{i}]"), a, Escape::None)) {
                args.push(t);
            }
        }
        let mut env: Vec<(String, SecretValue)> = Vec::new();
        for name in &config.pass_env {
            // Missing pass-through variables are simply not passed, as with `env -i`.
            if let Ok(v) = std::env::var(name) {
                env.push((name.clone(), SecretValue::new(v)));
            }
        }
        for (k, v) in &config.env {
            env.push((k.clone(), SecretValue::new(v.clone())));
        }
        for (k, r) in &config.secret_env {
            if let Some(v) = p.take(ctx.secret_str(&format!("secret_env.{k}"), r)) {
                env.push((k.clone(), v));
            }
        }
        let working_dir = config
            .working_dir
            .as_deref()
            .map(|d| ctx.resolve_path(d))
            .unwrap_or_else(|| ctx.base_dir().to_owned());
        let name = ctx.name().to_owned();
        p.finish(|| {
            Arc::new(ExecHandler {
                name,
                program,
                args,
                env,
                working_dir,
                timeout: Duration::from_secs(config.timeout_secs.max(1)),
            }) as Arc<dyn Handler>
        })
    }
}

/// A configured exec handler.
#[derive(Debug)]
pub struct ExecHandler {
    name: String,
    program: PathBuf,
    args: Vec<Template>,
    env: Vec<(String, SecretValue)>,
    working_dir: PathBuf,
    timeout: Duration,
}

impl ExecHandler {
    fn program_name(&self) -> String {
        self.program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "program".to_owned())
    }
}

/// Kill the whole process group led by `pid`. A group that is already gone is fine.
fn kill_group(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[async_trait]
impl Handler for ExecHandler {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, event: &Event, ctx: &mut Context) -> Result<Outcome, HandlerError> {
        let program = self.program_name();
        let vars = ctx.template_vars(event);
        let mut args = Vec::with_capacity(self.args.len());
        for (i, t) in self.args.iter().enumerate() {
            args.push(
                t.render(&vars)
                    .map_err(|e| HandlerError::permanent(format!("args[{i}]: {e}")))?,
            );
        }
        let stdin_json = serde_json::to_vec(event)
            .map_err(|_| HandlerError::permanent("event could not be written as JSON"))?;

        let mut cmd = Command::new(&self.program);
        cmd.args(&args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v.expose())))
            .env("WARDHOOK_HANDLER", &self.name)
            .env("WARDHOOK_IDEMPOTENCY_KEY", ctx.idempotency_key())
            .env("WARDHOOK_ATTEMPT", ctx.attempt().to_string())
            .current_dir(&self.working_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group, so the timeout can kill everything it started.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().map_err(|e| {
            HandlerError::permanent(format!("cannot start {program}: {}", e.kind()))
        })?;
        let pid = child.id();

        let stdin = child.stdin.take();
        let writer = tokio::spawn(async move {
            if let Some(mut stdin) = stdin {
                // A program that does not read stdin closes the pipe: not an error.
                let _ = stdin.write_all(&stdin_json).await;
            }
        });
        let stdout = child.stdout.take();
        let reader = tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(stdout) = stdout {
                let _ = stdout
                    .take(MAX_STDOUT_BYTES as u64 + 1)
                    .read_to_end(&mut buf)
                    .await;
            }
            buf
        });

        let timeout = ctx.time_left(self.timeout);
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        // Whatever happened, nothing from this attempt outlives it.
        kill_group(pid);
        writer.abort();
        let status: ExitStatus = match waited {
            Err(_) => {
                let _ = child.wait().await;
                reader.abort();
                return Err(HandlerError::retryable(format!(
                    "{program} timed out after {} s and was killed",
                    timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                reader.abort();
                return Err(HandlerError::retryable(format!(
                    "waiting for {program} failed: {}",
                    e.kind()
                )));
            }
            Ok(Ok(status)) => status,
        };
        let stdout = reader.await.unwrap_or_default();
        match status.code() {
            Some(0) => {
                let mut outcome = Outcome::done().with_destination(program);
                if stdout.len() <= MAX_STDOUT_BYTES {
                    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&stdout) {
                        outcome = outcome.with_data(json);
                    }
                }
                Ok(outcome)
            }
            Some(EXIT_RETRY) => Err(HandlerError::retryable(format!(
                "{program} exited with {EXIT_RETRY} (try again later)"
            ))),
            Some(code) => Err(HandlerError::permanent(format!(
                "{program} exited with {code}"
            ))),
            None => Err(HandlerError::permanent(format!(
                "{program} was killed by a signal"
            ))),
        }
    }
}
