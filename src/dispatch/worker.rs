//! The dispatch workers: a loop over [`Dispatcher::try_execute_task`], which claims one due job,
//! runs its handler under a deadline and records the outcome.
//!
//! Tests call `try_execute_task` directly instead of sleeping. Around the loop: a circuit breaker
//! per handler (after `circuit_failures` consecutive retryable failures the handler is skipped
//! for `circuit_open`, then one half-open probe decides), a per-handler concurrency limit so a
//! slow CRM cannot occupy every worker, retry delays from the route's schedule with jitter and
//! `Retry-After` honoured (at most a day), and a shutdown that stops claiming and lets running
//! attempts finish within the handler timeout. A panicking handler costs one attempt, never the
//! loop: invocations are caught in [`super::invoke_at`], and the loop catches anything else.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures_util::FutureExt as _;
use rand::Rng;
use tokio::sync::{watch, Notify};
use wardhook_sdk::{Handler, HandlerError};

use super::plan::RouteRule;
use crate::config::DispatchSettings;
use crate::store::caller_phone::{CallerPhone, PhonePointer};
use crate::store::jobs::{AttemptRecord, AttemptResult, ClaimedJob, NextStep};
use crate::store::{Predecessors, Storage, StoreError};

/// How often an idle worker looks for due jobs when nothing wakes it.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The furthest out a retry is ever scheduled (a year), whatever a schedule step says: keeps
/// `now + delay` inside the calendar for any configured value.
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(366 * 24 * 60 * 60);

/// The delay before the next attempt: the schedule's step `base` or the destination's
/// `retry_after` (capped at [`wardhook_sdk::limits::MAX_RETRY_AFTER`], whoever produced it),
/// whichever is longer, plus up to 20 % jitter (`unit` in `0.0..1.0`) so retries from many
/// deliveries do not reach a recovering CRM in one wave; at most [`MAX_RETRY_DELAY`]. Saturating
/// throughout: no value a destination or a config can send makes this panic.
pub(crate) fn retry_delay(base: Duration, retry_after: Option<Duration>, unit: f64) -> Duration {
    let requested = retry_after
        .unwrap_or_default()
        .min(wardhook_sdk::limits::MAX_RETRY_AFTER);
    let base = base.max(requested).min(MAX_RETRY_DELAY);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let jitter = base.mul_f64(0.2 * unit);
    base.saturating_add(jitter).min(MAX_RETRY_DELAY)
}

/// `now + after` for the job table, checked: a delay the calendar cannot hold is scheduled at
/// the furthest point [`MAX_RETRY_DELAY`] allows instead of panicking.
pub(crate) fn retry_time(now: DateTime<Utc>, after: Duration) -> DateTime<Utc> {
    let capped = after.min(MAX_RETRY_DELAY);
    chrono::TimeDelta::from_std(capped)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(now)
}

/// `Instant::now() + d` for a configured duration, held to [`MAX_RETRY_DELAY`] so no setting
/// can overflow the clock.
fn later(d: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(d.min(MAX_RETRY_DELAY)).unwrap_or(now)
}

/// How an attempt ended, as metrics and traces name it.
fn attempt_result(result: &AttemptResult) -> &'static str {
    match result {
        AttemptResult::Ok { .. } => "ok",
        AttemptResult::Retryable { .. } => "retryable",
        AttemptResult::Permanent { .. } => "permanent",
    }
}

/// The handlers and routes in force; swapped whole on reload.
#[derive(Debug, Default)]
pub struct Plan {
    handlers: HashMap<String, Arc<dyn Handler>>,
    routes: Vec<RouteRule>,
    /// The routes' ordering as data for claiming, built once per plan.
    order: Arc<Predecessors>,
    time_zone: wardhook_sdk::template::Tz,
    /// Handler name → where its output names the caller's phone (`caller_phone_from`).
    caller_phone_from: HashMap<String, PhonePointer>,
}

impl Plan {
    /// A plan from built handlers and compiled routes (see [`super::plan::build_plan`]).
    pub fn new(handlers: Vec<Arc<dyn Handler>>, routes: Vec<RouteRule>) -> Self {
        let mut plan = Self {
            handlers: handlers
                .into_iter()
                .map(|h| (h.name().to_owned(), h))
                .collect(),
            routes,
            order: Arc::default(),
            time_zone: wardhook_sdk::template::Tz::UTC,
            caller_phone_from: HashMap::new(),
        };
        plan.order = Arc::new(plan.claim_order());
        plan
    }

    /// Every route handler's predecessors, for [`Storage::claim_next`].
    fn claim_order(&self) -> Predecessors {
        let mut order = Predecessors::none();
        for route in &self.routes {
            for handler in &route.handlers {
                order.insert(
                    &route.source,
                    handler,
                    self.predecessors(&route.source, handler),
                );
            }
        }
        order
    }

    /// The clinic's time zone for templates and filters.
    pub fn with_time_zone(mut self, time_zone: wardhook_sdk::template::Tz) -> Self {
        self.time_zone = time_zone;
        self
    }

    /// Where each handler's output names the caller's phone, by handler name.
    pub fn with_caller_phones(mut self, pointers: HashMap<String, PhonePointer>) -> Self {
        self.caller_phone_from = pointers;
        self
    }

    /// The caller's phone `handler`'s output entry names, if it is configured to name one.
    pub fn caller_phone(&self, handler: &str, output: &serde_json::Value) -> Option<CallerPhone> {
        self.caller_phone_from.get(handler)?.read(output)
    }

    /// The handler called `name`.
    pub fn handler(&self, name: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(name).cloned()
    }

    /// The time zone filters and templates use.
    pub fn time_zone(&self) -> wardhook_sdk::template::Tz {
        self.time_zone
    }

    /// The compiled routes, in config order.
    pub fn routes(&self) -> &[RouteRule] {
        &self.routes
    }

    /// Handlers that run before `handler` in a route of `source` (their outputs are its
    /// `app_data`).
    fn predecessors(&self, source: &str, handler: &str) -> Vec<String> {
        let mut out = Vec::new();
        for route in self.routes.iter().filter(|r| r.source == source) {
            if let Some(pos) = route.handlers.iter().position(|h| h == handler) {
                for h in &route.handlers[..pos] {
                    if !out.contains(h) {
                        out.push(h.clone());
                    }
                }
            }
        }
        out
    }

    /// The retry schedule of the first route of `source` that runs `handler`.
    fn schedule<'a>(
        &'a self,
        source: &str,
        handler: &str,
        default: &'a [Duration],
    ) -> &'a [Duration] {
        self.routes
            .iter()
            .find(|r| r.source == source && r.handlers.iter().any(|h| h == handler))
            .and_then(|r| r.retry_schedule.as_deref())
            .unwrap_or(default)
    }
}

/// The plan shared between the listener (which swaps it on reload) and the workers.
pub type SharedPlan = Arc<RwLock<Arc<Plan>>>;

/// What one call of [`Dispatcher::try_execute_task`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskOutcome {
    /// Nothing was due (or everything due is held back by a circuit or concurrency limit).
    Idle,
    /// A job ran and succeeded.
    Done {
        /// The job.
        job_id: i64,
    },
    /// A job failed and will be retried.
    Retry {
        /// The job.
        job_id: i64,
        /// The delay chosen.
        after: Duration,
    },
    /// A job was dead-lettered.
    Dead {
        /// The job.
        job_id: i64,
    },
}

/// Why a dispatch step could not complete. The job stays claimed and is re-run after restart.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A blocking task panicked or was cancelled.
    #[error("dispatch task failed: {0}")]
    Task(String),
}

#[derive(Debug, Default)]
struct Breaker {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Circuit state of one handler, for health views and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are held back until the open period ends.
    Open,
    /// One probe call decides.
    HalfOpen,
}

/// One claimed job of a handler, counted against its concurrency limit until dropped. Dropped
/// without [`RunningSlot::finish`] (the step unwound), the attempt counts as a failure for the
/// circuit breaker, so a half-open probe that never reported cannot hold the handler forever.
struct RunningSlot<'a> {
    dispatcher: &'a Dispatcher,
    handler: String,
    finished: bool,
}

impl RunningSlot<'_> {
    /// The attempt ended; `failed` if it was a retryable failure.
    fn finish(mut self, failed: bool) {
        self.dispatcher.note_result(&self.handler, failed);
        self.finished = true;
    }
}

impl Drop for RunningSlot<'_> {
    fn drop(&mut self) {
        if let Some(n) = self
            .dispatcher
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&self.handler)
        {
            *n = n.saturating_sub(1);
        }
        if !self.finished {
            self.dispatcher.note_result(&self.handler, true);
        }
    }
}

/// Runs jobs. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Dispatcher {
    store: Arc<dyn Storage>,
    plan: SharedPlan,
    settings: DispatchSettings,
    breakers: Mutex<HashMap<String, Breaker>>,
    running: Mutex<HashMap<String, usize>>,
    claim_lock: tokio::sync::Mutex<()>,
    wake: Arc<Notify>,
    /// Delivery traces: each attempt becomes a span of its delivery's trace.
    traces: crate::telemetry::traces::Traces,
    /// The built-in `capture` step and the artifact opener handed to handlers, when
    /// `[artifacts]` is configured.
    artifacts: Option<(
        Arc<dyn Handler>,
        Arc<dyn wardhook_sdk::artifacts::ArtifactSource>,
    )>,
}

impl Dispatcher {
    /// A dispatcher over `store` (either backend) with the handlers and routes of `plan`.
    pub fn new(store: Arc<dyn Storage>, plan: SharedPlan, settings: DispatchSettings) -> Self {
        Self {
            store,
            plan,
            settings,
            breakers: Mutex::default(),
            running: Mutex::default(),
            claim_lock: tokio::sync::Mutex::new(()),
            wake: Arc::new(Notify::new()),
            traces: crate::telemetry::traces::Traces::off(),
            artifacts: None,
        }
    }

    /// Export each attempt as a span of its delivery's trace through `traces`.
    #[must_use]
    pub fn with_traces(mut self, traces: crate::telemetry::traces::Traces) -> Self {
        self.traces = traces;
        self
    }

    /// Run the built-in `capture` step with `capture`, and let handlers open artifacts
    /// through `source` (the PHI guard withholds it from `phi = "none"` handlers).
    pub fn with_artifacts(
        mut self,
        capture: Arc<dyn Handler>,
        source: Arc<dyn wardhook_sdk::artifacts::ArtifactSource>,
    ) -> Self {
        self.artifacts = Some((capture, source));
        self
    }

    /// Notified by intake when new jobs were committed, so idle workers start at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Put jobs orphaned by a crash back in the queue; call once before the workers start.
    pub async fn recover(&self) -> Result<u64, DispatchError> {
        let n = self.store.recover_orphaned().await?;
        if n > 0 {
            tracing::warn!(jobs = n, "re-queued jobs interrupted by the previous stop");
        }
        Ok(n)
    }

    /// The circuit state of `handler` now.
    pub fn circuit_state(&self, handler: &str) -> CircuitState {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        match breakers.get(handler) {
            Some(b) if b.probing => CircuitState::HalfOpen,
            Some(Breaker {
                open_until: Some(t),
                ..
            }) if *t > Instant::now() => CircuitState::Open,
            Some(Breaker {
                open_until: Some(_),
                ..
            }) => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    fn plan(&self) -> Arc<Plan> {
        self.plan.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Handlers not to claim for now: open circuits, a half-open probe already running, or
    /// the per-handler concurrency limit reached.
    fn excluded(&self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        {
            let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
            for (name, b) in breakers.iter() {
                let open = b.open_until.is_some_and(|t| t > now);
                if open || b.probing {
                    out.push(name.clone());
                }
            }
        }
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for (name, n) in running.iter() {
            if *n >= self.settings.max_concurrency_per_handler && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// Count a claimed job of `handler` against its concurrency limit; the slot is given back
    /// when the returned guard is dropped, also if the step unwinds.
    fn note_start(&self, handler: &str) -> RunningSlot<'_> {
        *self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(handler.to_owned())
            .or_default() += 1;
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = breakers.get_mut(handler) {
            if b.open_until.is_some_and(|t| t <= Instant::now()) {
                // The open period is over: this call is the half-open probe.
                b.probing = true;
            }
        }
        RunningSlot {
            dispatcher: self,
            handler: handler.to_owned(),
            finished: false,
        }
    }

    /// Feed one finished attempt of `handler` to its circuit breaker.
    fn note_result(&self, handler: &str, failed: bool) {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        let b = breakers.entry(handler.to_owned()).or_default();
        if failed {
            b.consecutive_failures += 1;
            if b.probing || b.consecutive_failures >= self.settings.circuit_failures {
                if b.open_until.is_none() || b.probing {
                    tracing::warn!(handler, "circuit open: holding this handler's jobs back");
                }
                b.open_until = Some(later(self.settings.circuit_open));
            }
        } else {
            if b.open_until.is_some() {
                tracing::info!(handler, "circuit closed: handler answering again");
            }
            *b = Breaker::default();
        }
        b.probing = false;
    }

    /// Claim one due job, run it and record the outcome.
    pub async fn try_execute_task(&self) -> Result<TaskOutcome, DispatchError> {
        let plan = self.plan();
        let lease = self
            .settings
            .handler_timeout
            .saturating_mul(2)
            .saturating_add(Duration::from_secs(10));
        let (job, slot) = {
            let _guard = self.claim_lock.lock().await;
            let exclude = self.excluded(Instant::now());
            let job = self
                .store
                .claim_next(exclude, lease, Arc::clone(&plan.order))
                .await?;
            let Some(job) = job else {
                return Ok(TaskOutcome::Idle);
            };
            let slot = self.note_start(&job.handler);
            (job, slot)
        };
        let started_at = Utc::now();
        let t0 = Instant::now();
        let result = self.run_job(&plan, &job).await;
        let latency = t0.elapsed();
        let (record, retry_after) = match result {
            Ok(outcome) => {
                let output = outcome.app_data_entry();
                let caller_phone = plan.caller_phone(&job.handler, &output);
                (
                    AttemptRecord {
                        started_at,
                        latency,
                        http_status: outcome.status,
                        destination: outcome.destination.clone(),
                        result: AttemptResult::Ok {
                            output,
                            caller_phone,
                        },
                    },
                    None,
                )
            }
            Err(HandlerError::Retryable {
                reason,
                retry_after,
            }) => (
                AttemptRecord {
                    started_at,
                    latency,
                    http_status: None,
                    destination: None,
                    result: AttemptResult::Retryable { reason },
                },
                retry_after,
            ),
            Err(HandlerError::Permanent { reason }) => (
                AttemptRecord {
                    started_at,
                    latency,
                    http_status: None,
                    destination: None,
                    result: AttemptResult::Permanent { reason },
                },
                None,
            ),
        };
        slot.finish(matches!(record.result, AttemptResult::Retryable { .. }));
        let (next, outcome) = self.next_step(&plan, &job, &record.result, retry_after);
        crate::metrics::handler_attempt(&job.handler, attempt_result(&record.result), latency);
        if matches!(outcome, TaskOutcome::Dead { .. }) {
            crate::metrics::dead_letter(&job.handler);
        }
        let result = attempt_result(&record.result);
        self.traces.attempt(&crate::telemetry::traces::Attempt {
            delivery_id: &job.delivery_id,
            source: &job.source,
            handler: &job.handler,
            job_id: job.id,
            attempt: job.attempt,
            started: started_at.into(),
            latency,
            result,
            http_status: record.http_status,
        });
        let trace_id = self.traces.trace_id(&job.delivery_id);
        match &record.result {
            AttemptResult::Ok { .. } => {
                tracing::info!(job = job.id, handler = %job.handler, attempt = job.attempt, latency_ms = latency.as_millis() as u64, trace_id, "handler succeeded");
            }
            AttemptResult::Retryable { reason } | AttemptResult::Permanent { reason } => {
                tracing::warn!(job = job.id, handler = %job.handler, attempt = job.attempt, reason = %reason, next = ?next, trace_id, "handler failed");
            }
        }
        self.store.finish_attempt(job, record, next).await?;
        Ok(outcome)
    }

    async fn run_job(
        &self,
        plan: &Plan,
        job: &ClaimedJob,
    ) -> Result<wardhook_sdk::Outcome, HandlerError> {
        let builtin = || {
            self.artifacts
                .as_ref()
                .filter(|_| job.handler == wardhook_sdk::artifacts::CAPTURE_STEP)
                .map(|(capture, _)| capture.clone())
        };
        let Some(handler) = plan.handlers.get(&job.handler).cloned().or_else(builtin) else {
            return Err(HandlerError::Permanent {
                reason: format!("handler {} is no longer configured", job.handler),
            });
        };
        let (event, app_data) = match self.store.load_for_dispatch(job).await {
            Ok(v) => v,
            Err(StoreError::KeyDestroyed) => {
                return Err(HandlerError::Permanent {
                    reason: "the delivery's payload was purged".into(),
                })
            }
            Err(e) => {
                return Err(HandlerError::Retryable {
                    reason: format!("cannot load the delivery: {e}"),
                    retry_after: None,
                })
            }
        };
        let deadline = later(self.settings.handler_timeout);
        let mut ctx = wardhook_sdk::Context::new(&event.delivery_id, handler.name(), job.attempt)
            .with_deadline(deadline)
            .with_app_data(app_data)
            .with_time(Utc::now(), self.settings.time_zone);
        if let Some((_, source)) = &self.artifacts {
            ctx = ctx.with_artifact_source(source.clone());
        }
        super::invoke_in_context(&*handler, &event, ctx, deadline).await
    }

    fn next_step(
        &self,
        plan: &Plan,
        job: &ClaimedJob,
        result: &AttemptResult,
        retry_after: Option<Duration>,
    ) -> (NextStep, TaskOutcome) {
        match result {
            AttemptResult::Ok { .. } => (NextStep::Done, TaskOutcome::Done { job_id: job.id }),
            AttemptResult::Permanent { .. } => {
                (NextStep::Dead, TaskOutcome::Dead { job_id: job.id })
            }
            AttemptResult::Retryable { .. } => {
                let schedule =
                    plan.schedule(&job.source, &job.handler, &self.settings.retry_schedule);
                let made = job.schedule_index as usize + 1;
                match schedule.get(made) {
                    None => (NextStep::Dead, TaskOutcome::Dead { job_id: job.id }),
                    Some(base) => {
                        let after = retry_delay(*base, retry_after, rand::thread_rng().gen());
                        (
                            NextStep::RetryAt(retry_time(Utc::now(), after)),
                            TaskOutcome::Retry {
                                job_id: job.id,
                                after,
                            },
                        )
                    }
                }
            }
        }
    }

    /// Run `workers` loops until `shutdown` turns true; then stop claiming and give running
    /// attempts up to the handler timeout to finish.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if let Err(e) = self.recover().await {
            tracing::error!(error = %e, "cannot re-queue interrupted jobs");
        }
        let mut loops = Vec::new();
        for _ in 0..self.settings.workers {
            let me = self.clone();
            let mut stop = shutdown.clone();
            loops.push(tokio::spawn(async move {
                while !*stop.borrow() {
                    // Handler panics are caught around the invocation (see `invoke_at`); this
                    // catches the rest, so no step can end the loop.
                    let step = AssertUnwindSafe(me.try_execute_task()).catch_unwind().await;
                    let Ok(step) = step else {
                        tracing::error!("dispatch step panicked; the worker goes on");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    };
                    match step {
                        Ok(TaskOutcome::Idle) => {
                            tokio::select! {
                                () = tokio::time::sleep(IDLE_POLL) => {}
                                () = me.wake.notified() => {}
                                _ = stop.changed() => {}
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "dispatch step failed; retrying shortly");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            }));
        }
        let _ = shutdown.wait_for(|stop| *stop).await;
        let bound = self
            .settings
            .handler_timeout
            .saturating_add(Duration::from_secs(1));
        let all = futures_util::future::join_all(loops);
        if tokio::time::timeout(bound, all).await.is_err() {
            tracing::warn!("attempts still running at shutdown; they will run again after restart");
        }
    }
}
