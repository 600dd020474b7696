//! `POST /hooks/{source}`: the path of one delivery through the synchronous stages, in order —
//! cap → verify → normalize → plan → intake → respond. Each step is one function below; any
//! step may end the request with a [`HookError`], which renders the sender's answer. Rejected
//! requests have their own per-client budget and a bounded audit trail
//! ([`super::rejections`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use wardhook_sdk::Event;

use super::access::AccessNote;
use super::body::{read_capped, BodyError};
use super::handoff::{Handoff, HandoffOutcome, Handover, RelayedError, RelayedOutcome};
use super::hook_error::HookError;
use super::rejections::Tally;
use super::{AppState, SourceRuntime};
use crate::dispatch::plan::{RealtimeRoute, Routing};
use crate::dispatch::realtime::Reply;
use crate::dispatch::worker::Plan;
use crate::normalize::DedupKey;
use crate::normalize::{normalize, IntakeInput, NormalizeError, Normalized};
use crate::store::{IntakeOutcome, JobSpec};
use crate::verify::{ChallengeReply, Rejection, UnverifiedRequest, Verdict};

/// `POST /hooks/{source}`.
///
/// The request's span is DEBUG: at the default INFO level its call site is disabled, so no span
/// is allocated or formatted per request (lines logged on the way name their source instead).
/// With traces on, the stages' timings are kept in a [`Receipt`] and exported once the
/// delivery is stored.
#[tracing::instrument(level = "debug", name = "hook", skip_all, fields(source = %path.as_str()))]
pub(super) async fn receive_hook(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, HookError> {
    let started = Instant::now();
    let live = state.live();
    let source = live
        .sources
        .get(path.as_str())
        .ok_or(HookError::UnknownSource)?;
    let mut receipt = state.traces.receipt();
    let body = cap(&req, payload, source).await?;
    receipt.stage("read body");
    // Benchmark ceiling only (`--features bench-stub`): TLS + HTTP + body, nothing else.
    #[cfg(feature = "bench-stub")]
    if !body.is_empty() {
        return Ok(HttpResponse::Ok()
            .json(serde_json::json!({ "status": "accepted", "delivery_id": "stub" })));
    }
    let delivery = match verify(&state, &req, source, &body)? {
        Verdict::Challenge(reply) => return Ok(challenge(reply)),
        Verdict::Verified(delivery) => delivery,
    };
    receipt.stage("verify");
    drop(body);
    let input = IntakeInput::from(delivery);
    if let Some(handoff) = &state.handoff {
        return hand_off(&state, handoff.as_ref(), input).await;
    }
    let (input, mut normalized) = normalize_or_quarantine(&state, input, Utc::now()).await?;
    receipt.stage("normalize");
    let plan = state.plan.read().unwrap_or_else(|p| p.into_inner()).clone();
    // The event normalize built is routed, sealed by the store and handed to a real-time
    // route's handlers: one value, never rebuilt.
    let Routing { jobs, realtime } = plan.route(normalized.event(), Utc::now());
    let source = input.source().to_owned();
    let job_count = jobs.len();
    receipt.stage("route");
    let outcome = intake(&state, input, &mut normalized, jobs).await?;
    receipt.stage("commit");
    let trace_source = receipt.is_recording().then(|| source.clone());
    let mut res = match realtime {
        Some(route) => {
            let res = answer_realtime(
                &state,
                route,
                &plan,
                normalized.into_event(),
                source,
                &outcome,
                started,
            )
            .await;
            receipt.stage("real-time reply");
            res
        }
        None => respond(&outcome),
    };
    let (delivery_id, outcome) = match outcome {
        IntakeOutcome::Accepted { delivery_id } => (delivery_id, "accepted"),
        IntakeOutcome::Duplicate { delivery_id } => (delivery_id, "duplicate"),
    };
    let trace_id = state.traces.trace_id(&delivery_id);
    if let Some(source) = trace_source {
        state.traces.finish(
            receipt,
            &crate::telemetry::traces::Stored {
                source: &source,
                delivery_id: &delivery_id,
                outcome,
                jobs: job_count,
                status: res.status().as_u16(),
            },
        );
    }
    AccessNote {
        delivery_id,
        outcome,
        trace_id,
    }
    .attach(&mut res);
    Ok(res)
}

/// Cap: read the body, refusing it as soon as it passes the source's cap.
async fn cap(
    req: &HttpRequest,
    payload: web::Payload,
    source: &SourceRuntime,
) -> Result<Vec<u8>, HookError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match read_capped(payload, declared, source.max_body_bytes).await {
        Ok(b) => Ok(b),
        Err(BodyError::TooLarge { cap }) => {
            tracing::warn!(source = %source.name, cap, "body over the source's cap");
            Err(HookError::TooLarge)
        }
        Err(BodyError::Broken) => Err(HookError::BadRequest),
    }
}

/// Verify: the sender's signature or token; then the source's rate limit, which only
/// authenticated requests spend, so forgeries cannot use it up and lock the real sender out
/// (rejected ones are limited per client address in [`reject`]).
fn verify(
    state: &AppState,
    req: &HttpRequest,
    source: &SourceRuntime,
    body: &[u8],
) -> Result<Verdict, HookError> {
    let peer_ip = req
        .peer_addr()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    let unverified = UnverifiedRequest {
        method: req.method().as_str(),
        path_and_query: req
            .uri()
            .path_and_query()
            .map_or(req.path(), |p| p.as_str()),
        headers: req.headers(),
        body,
        peer_ip,
    };
    let verdict = match source.verifier.verify(&unverified, Utc::now()) {
        Ok(verdict) => verdict,
        Err(rejection) => {
            let client = client_address(source, peer_ip, req.headers());
            return Err(reject(state, &source.name, &rejection, client));
        }
    };
    if let Some(bucket) = &source.bucket {
        bucket
            .try_take(Instant::now())
            .map_err(HookError::RateLimited)?;
    }
    if let Verdict::Verified(delivery) = &verdict {
        if let Some(signed_at) = delivery.signed_at() {
            state.clock.record(&source.name, signed_at, Utc::now());
        }
    }
    Ok(verdict)
}

/// A sender's URL-validation challenge, answered as the verifier says.
fn challenge(reply: ChallengeReply) -> HttpResponse {
    let mut res = HttpResponse::build(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK));
    for (name, value) in &reply.headers {
        res.insert_header((name.as_str(), value.as_str()));
    }
    res.content_type(reply.content_type).body(reply.body)
}

/// Normalize: the canonical event's fields; an authentic delivery that cannot be normalized is
/// stored in quarantine and answered 400.
async fn normalize_or_quarantine(
    state: &AppState,
    input: IntakeInput,
    received_at: chrono::DateTime<Utc>,
) -> Result<(IntakeInput, Normalized), HookError> {
    match normalize(&input, received_at) {
        Ok(n) => Ok((input, n)),
        Err(reason) => {
            let quarantine_id = quarantine(state, input, &reason)
                .await
                .map_err(|e| HookError::storage(&e))?;
            Err(HookError::Quarantined {
                reason: reason.to_string(),
                quarantine_id,
            })
        }
    }
}

/// Keep an authentic delivery that cannot be stored as one for an operator, with `reason`;
/// its quarantine id.
async fn quarantine(
    state: &AppState,
    input: IntakeInput,
    reason: &NormalizeError,
) -> Result<String, crate::store::StoreError> {
    tracing::warn!(
        source = input.source(),
        reason = reason.code(),
        "authentic delivery quarantined"
    );
    let source = input.source().to_owned();
    let id = state.store.quarantine(input, reason).await?;
    crate::metrics::delivery(&source, "quarantined");
    Ok(id.0)
}

/// Intake: commit the delivery with its jobs (durable before any answer), and wake the workers
/// if there is work. Not stored means not acknowledged: any storage error is a 503, even one
/// that retrying does not cure, so the sender keeps the delivery while the log says what broke.
async fn intake(
    state: &AppState,
    input: IntakeInput,
    normalized: &mut Normalized,
    jobs: Vec<JobSpec>,
) -> Result<IntakeOutcome, HookError> {
    let source = input.source().to_owned();
    let has_jobs = !jobs.is_empty();
    let outcome = state
        .store
        .intake(input, normalized, jobs)
        .await
        .map_err(|e| HookError::storage(&e))?;
    match &outcome {
        IntakeOutcome::Accepted { .. } => {
            crate::metrics::delivery(&source, "accepted");
            if has_jobs {
                state.dispatch_wake.notify_waiters();
            }
        }
        IntakeOutcome::Duplicate { .. } => crate::metrics::delivery(&source, "duplicate"),
    }
    Ok(outcome)
}

/// Respond (asynchronous routes): accepted, or a duplicate of the first delivery. The access
/// line names the delivery and its outcome; these DEBUG lines are for whoever asks for them
/// ([`crate::telemetry::DELIVERY_TARGET`]).
fn respond(outcome: &IntakeOutcome) -> HttpResponse {
    let (status, delivery_id) = match outcome {
        IntakeOutcome::Accepted { delivery_id } => {
            tracing::debug!(target: "wardhook::delivery", delivery_id = %delivery_id, "delivery accepted");
            ("accepted", delivery_id)
        }
        IntakeOutcome::Duplicate { delivery_id } => {
            tracing::debug!(target: "wardhook::delivery", delivery_id = %delivery_id, "duplicate delivery");
            ("duplicate", delivery_id)
        }
    };
    HttpResponse::Ok().json(Ack {
        delivery_id,
        status,
    })
}

/// The body of a 200 answer: `{"delivery_id":…,"status":…}`, serialized straight from the
/// fields (in the order the answer has always had) rather than through a `json!` map.
#[derive(serde::Serialize)]
struct Ack<'a> {
    delivery_id: &'a str,
    status: &'static str,
}

/// The client address a rejection is recorded under: the one the IP allowlist judges (behind
/// trusted proxies, the forwarded client), or the TCP peer when `X-Forwarded-For` is unusable.
fn client_address(
    source: &super::SourceRuntime,
    peer: IpAddr,
    headers: &actix_web::http::header::HeaderMap,
) -> IpAddr {
    let trusted = &source.verifier.spec().trusted_proxies;
    crate::verify::ip::resolve_client_ip(peer, headers, trusted).unwrap_or(peer)
}

/// Answer a refused delivery and keep its audit trail bounded.
///
/// The rejection is tallied per (source, reason, client address): the first of an interval is
/// audited now (`delivery_rejected` with the reason and the client address), the rest go into
/// one counted record when the interval ends (see [`super::rejections`]). Each client address
/// also has a budget of rejected requests; past it the answer is 429 with `Retry-After` and no
/// "delivery rejected" warning (the request's one access-log line remains). Only rejected
/// requests spend that budget, so a correctly signed delivery from the same address is still
/// accepted. The audit write runs beside the answer: a 401 does not wait for it, and a storage
/// failure is logged rather than turned into another answer.
fn reject(state: &AppState, source: &str, rejection: &Rejection, client: IpAddr) -> HookError {
    let over_budget = state.rejected_budget.try_take(client, Instant::now()).err();
    if let Tally::RecordNow(record) =
        state
            .rejections
            .note(source, rejection.code(), client, Utc::now())
    {
        let store = state.store.clone();
        actix_web::rt::spawn(async move {
            if let Err(e) = store.record_audit(*record).await {
                tracing::error!(error = %e, "cannot audit a rejected delivery");
            }
        });
    }
    if let Some(wait) = over_budget {
        return HookError::RateLimited(wait);
    }
    tracing::warn!(source, reason = %rejection, "delivery rejected");
    if rejection.status() == 403 {
        HookError::Forbidden
    } else {
        HookError::Unauthorized
    }
}

/// Respond (a real-time route): the delivery is committed; answer with the stored reply of a
/// retried request, or compute one within the route's deadline.
async fn answer_realtime(
    state: &AppState,
    route: RealtimeRoute,
    plan: &Plan,
    mut event: Event,
    source: String,
    outcome: &IntakeOutcome,
    started: Instant,
) -> HttpResponse {
    let (delivery_id, duplicate) = match outcome {
        IntakeOutcome::Accepted { delivery_id } => (delivery_id.clone(), false),
        IntakeOutcome::Duplicate { delivery_id } => (delivery_id.clone(), true),
    };
    if duplicate {
        if let Ok(Some(reply)) = state.store.load_reply(delivery_id.clone()).await {
            tracing::info!(source = %source, delivery_id = %delivery_id, "retried real-time request; stored reply sent");
            return reply_response(&reply);
        }
    }
    event.delivery_id.clone_from(&delivery_id);
    let rt = &route.reply;
    // Keep a little of the budget for storing the reply before answering.
    let margin = Duration::from_millis(25).min(rt.deadline / 4);
    let budget = rt
        .deadline
        .saturating_sub(started.elapsed())
        .saturating_sub(margin);
    let (reply, caller_phone) = if let Some(handlers) = &route.handlers {
        let answer = rt.answer(handlers, &event, budget, plan.time_zone()).await;
        // The first of the route's handlers whose output names the caller's number.
        let caller_phone = answer.outputs.as_ref().and_then(|outputs| {
            handlers.iter().find_map(|h| {
                outputs
                    .get(h.name())
                    .and_then(|output| plan.caller_phone(h.name(), output))
            })
        });
        (answer.reply, caller_phone)
    } else {
        tracing::warn!(
            source = %source,
            "real-time route names a handler that is not configured; fallback sent"
        );
        (rt.fallback_reply(), None)
    };
    drop(event);
    let elapsed = started.elapsed();
    crate::metrics::realtime_reply(&source, reply.fallback, elapsed);
    let store = state.store.clone();
    let stored = reply.clone();
    let id = delivery_id.clone();
    let latency_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
    let record = async move {
        store
            .record_reply(id, source, stored, latency_ms, caller_phone)
            .await
    };
    // The reply is owed on time; storing it may not push the answer past the deadline.
    let remaining = rt.deadline.saturating_sub(started.elapsed());
    match tokio::time::timeout(remaining.max(Duration::from_millis(5)), record).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot store the real-time reply"),
        Err(_) => tracing::warn!("storing the real-time reply is late; answering first"),
    }
    reply_response(&reply)
}

fn reply_response(reply: &Reply) -> HttpResponse {
    HttpResponse::build(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK))
        .content_type(reply.content_type.as_str())
        .insert_header((
            "X-Wardhook-Reply",
            if reply.fallback {
                "fallback"
            } else {
                "computed"
            },
        ))
        .body(reply.body.clone())
}

/// On a DMZ relay: seal and buffer the verified delivery instead of storing it here.
///
/// The delivery is normalized in memory only, to recognise a retry (its dedup key, kept at
/// the relay as a keyed blind index) and to find a real-time route, which gets the route's
/// fallback reply (the data to compute a reply is inside). An envelope that does not
/// normalize is sealed all the same, keyed by its body's SHA-256: the inside node quarantines
/// it, since the relay keeps nothing it could read.
async fn hand_off(
    state: &AppState,
    handoff: &dyn Handoff,
    input: IntakeInput,
) -> Result<HttpResponse, HookError> {
    use sha2::{Digest as _, Sha256};
    let received_at = Utc::now();
    let normalized = normalize(&input, received_at).ok();
    let realtime = normalized.as_ref().and_then(|n| {
        let plan = state.plan.read().unwrap_or_else(|p| p.into_inner()).clone();
        plan.route(n.event(), received_at).realtime
    });
    let dedup = normalized.map_or_else(
        || DedupKey::BodySha256(Sha256::digest(&input.body).into()),
        |n| n.dedup,
    );
    let source = input.source().to_owned();
    let outcome = handoff
        .hand_off(Handover {
            input,
            received_at,
            dedup,
        })
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "relay cannot buffer; asking the sender to retry");
            crate::metrics::storage_error();
            HookError::StorageUnavailable
        })?;
    let outcome = match outcome {
        HandoffOutcome::Accepted(delivery_id) => {
            crate::metrics::delivery(&source, "accepted");
            IntakeOutcome::Accepted { delivery_id }
        }
        HandoffOutcome::Duplicate(delivery_id) => {
            crate::metrics::delivery(&source, "duplicate");
            IntakeOutcome::Duplicate { delivery_id }
        }
    };
    match realtime {
        Some(route) => {
            tracing::info!("real-time route on the relay: fallback reply sent");
            let reply = route.reply.fallback_reply();
            crate::metrics::realtime_reply(&source, true, Duration::ZERO);
            Ok(reply_response(&reply))
        }
        None => Ok(respond(&outcome)),
    }
}

/// On the inside node: a delivery the DMZ relay verified, opened by the puller, through the
/// usual normalize (or quarantine) → route → intake, received at the relay's receipt time.
/// Real-time routes' handlers are not run: the relay has answered the sender with the
/// route's fallback. Any storage failure is an error: the puller does not acknowledge, and the
/// relay serves the record again.
pub async fn ingest_relayed(
    state: &AppState,
    input: IntakeInput,
    received_at: chrono::DateTime<Utc>,
) -> Result<RelayedOutcome, RelayedError> {
    // The relay's config has a source this node's lacks: kept in quarantine for an operator,
    // never routed or stored as a delivery, and acknowledged so it does not pile up at the
    // relay.
    if !state.live().sources.contains_key(input.source()) {
        return quarantine(state, input, &NormalizeError::UnknownSource)
            .await
            .map(RelayedOutcome::Quarantined)
            .map_err(|_| RelayedError);
    }
    let (input, mut normalized) = match normalize_or_quarantine(state, input, received_at).await {
        Ok(n) => n,
        Err(HookError::Quarantined { quarantine_id, .. }) => {
            return Ok(RelayedOutcome::Quarantined(quarantine_id))
        }
        Err(_) => return Err(RelayedError),
    };
    let plan = state.plan.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Routing { jobs, .. } = plan.route(normalized.event(), Utc::now());
    match intake(state, input, &mut normalized, jobs).await {
        Ok(IntakeOutcome::Accepted { delivery_id }) => Ok(RelayedOutcome::Accepted(delivery_id)),
        Ok(IntakeOutcome::Duplicate { delivery_id }) => Ok(RelayedOutcome::Duplicate(delivery_id)),
        Err(_) => Err(RelayedError),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::respond;
    use crate::store::IntakeOutcome;

    /// Senders and their tooling see the answer they always saw, byte for byte.
    #[actix_web::test]
    async fn the_answer_to_a_stored_delivery_keeps_its_text() {
        for (outcome, text) in [
            (
                IntakeOutcome::Accepted {
                    delivery_id: "0193-a".into(),
                },
                r#"{"delivery_id":"0193-a","status":"accepted"}"#,
            ),
            (
                IntakeOutcome::Duplicate {
                    delivery_id: "0193-b".into(),
                },
                r#"{"delivery_id":"0193-b","status":"duplicate"}"#,
            ),
        ] {
            let res = respond(&outcome);
            assert_eq!(res.status(), 200);
            let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
            assert_eq!(body, text.as_bytes());
        }
    }
}
