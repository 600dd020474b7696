//! `POST /hooks/{source}`: the path of one delivery through the synchronous stages — body cap,
//! verify, the source's rate limit (authenticated requests only), normalize, then the durable
//! commit — and the one answer the sender gets. Rejected requests have their own per-client
//! budget and a bounded audit trail ([`super::rejections`]).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde_json::json;

use super::body::{read_capped, BodyError};
use super::rejections::Tally;
use super::{error_response, AppState};
use crate::dispatch::plan::{RealtimeRoute, Routing};
use crate::dispatch::realtime::Reply;
use crate::normalize::{normalize, IntakeInput};
use crate::store::{IntakeOutcome, JobSpec, StoreError};
use crate::verify::{Rejection, UnverifiedRequest, Verdict, VerifiedDelivery};

/// Seconds a sender is asked to wait before retrying after a storage failure.
const STORAGE_RETRY_AFTER: &str = "30";

/// `POST /hooks/{source}`.
#[tracing::instrument(name = "hook", skip_all, fields(source = %path.as_str()))]
pub(super) async fn receive_hook(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let started = Instant::now();
    let live = state.live();
    let Some(rt) = live.sources.get(path.as_str()) else {
        return error_response(StatusCode::NOT_FOUND, "unknown source");
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_capped(payload, declared, rt.max_body_bytes).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { cap }) => {
            tracing::warn!(cap, "body over the source's cap");
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large");
        }
        Err(BodyError::Broken) => return error_response(StatusCode::BAD_REQUEST, "bad request"),
    };
    // Benchmark ceiling only (`--features bench-stub`): TLS + HTTP + body, nothing else.
    #[cfg(feature = "bench-stub")]
    if !body.is_empty() {
        return HttpResponse::Ok().json(json!({ "status": "accepted", "delivery_id": "stub" }));
    }
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
        body: &body,
        peer_ip,
    };
    let verdict = match rt.verifier.verify(&unverified, Utc::now()) {
        Ok(verdict) => verdict,
        Err(rejection) => {
            let client = client_address(rt, peer_ip, req.headers());
            return reject(&state, rt.name.as_str(), &rejection, client);
        }
    };
    // Only authenticated requests spend the source's budget, so forgeries cannot use it up and
    // lock the real sender out; rejected ones are limited per client address in `reject`.
    if let Some(bucket) = &rt.bucket {
        if let Err(wait) = bucket.try_take(Instant::now()) {
            return too_many_requests(wait);
        }
    }
    match verdict {
        Verdict::Challenge(reply) => {
            let mut res =
                HttpResponse::build(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK));
            for (name, value) in &reply.headers {
                res.insert_header((name.as_str(), value.as_str()));
            }
            res.content_type(reply.content_type).body(reply.body)
        }
        Verdict::Verified(delivery) => {
            if let Some(signed_at) = delivery.signed_at() {
                state.clock.record(path.as_str(), signed_at, Utc::now());
            }
            intake(&state, delivery, started).await
        }
    }
}

/// Cap on an OAuth2 token request body: a few form fields.
const MAX_TOKEN_REQUEST: usize = 4096;

/// `POST /oauth/token`: the client-credentials grant for senders that can only fetch bearer
/// tokens. 404 unless some source has `scheme.oauth_clients`.
pub(super) async fn oauth_token(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> HttpResponse {
    let live = state.live();
    let Some(issuer) = live.oauth.as_ref() else {
        return error_response(StatusCode::NOT_FOUND, "not found");
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let body = match read_capped(payload, declared, MAX_TOKEN_REQUEST).await {
        Ok(b) => b,
        Err(BodyError::TooLarge { .. }) => {
            return error_response(StatusCode::PAYLOAD_TOO_LARGE, "payload too large")
        }
        Err(BodyError::Broken) => return error_response(StatusCode::BAD_REQUEST, "bad request"),
    };
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let answer = issuer.token_endpoint(&body, authorization, Utc::now());
    tracing::info!(status = answer.status, "oauth token request");
    let mut res =
        HttpResponse::build(StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_REQUEST));
    for (name, value) in &answer.headers {
        res.insert_header((name.as_str(), value.as_str()));
    }
    res.content_type("application/json").body(answer.body)
}

/// 429 with `Retry-After` in whole seconds (at least 1).
fn too_many_requests(wait: Duration) -> HttpResponse {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HttpResponse::TooManyRequests()
        .insert_header((header::RETRY_AFTER, secs.max(1).to_string()))
        .json(json!({ "error": "rate limited" }))
}

/// The client address a rejection is recorded under: the one the IP allowlist judges (behind
/// trusted proxies, the forwarded client), or the TCP peer when `X-Forwarded-For` is unusable.
fn client_address(
    rt: &super::SourceRuntime,
    peer: IpAddr,
    headers: &actix_web::http::header::HeaderMap,
) -> IpAddr {
    let trusted = &rt.verifier.spec().trusted_proxies;
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
fn reject(state: &AppState, source: &str, rejection: &Rejection, client: IpAddr) -> HttpResponse {
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
        return too_many_requests(wait);
    }
    tracing::warn!(reason = %rejection, "delivery rejected");
    if rejection.status() == 403 {
        error_response(StatusCode::FORBIDDEN, "forbidden")
    } else {
        error_response(StatusCode::UNAUTHORIZED, "unauthorized")
    }
}

fn unavailable(e: &StoreError) -> HttpResponse {
    tracing::error!(error = %e, "storage cannot commit; asking the sender to retry");
    HttpResponse::ServiceUnavailable()
        .insert_header((header::RETRY_AFTER, STORAGE_RETRY_AFTER))
        .json(json!({ "error": "storage unavailable" }))
}

/// Normalize, then commit (or quarantine) before answering.
async fn intake(state: &AppState, delivery: VerifiedDelivery, started: Instant) -> HttpResponse {
    let input = IntakeInput::from_verified(&delivery);
    drop(delivery);
    let normalized = match normalize(&input, Utc::now()) {
        Ok(n) => n,
        Err(reason) => {
            tracing::warn!(reason = reason.code(), "authentic delivery quarantined");
            let source = input.source().to_owned();
            return match state.store.quarantine(input, &reason).await {
                Ok(id) => {
                    crate::metrics::delivery(&source, "quarantined");
                    HttpResponse::BadRequest()
                        .json(json!({ "error": reason.to_string(), "quarantine_id": id.0 }))
                }
                Err(e) => unavailable(&e),
            };
        }
    };
    let source = input.source().to_owned();
    let event = normalized.to_event("", &source);
    let plan = state.plan.read().unwrap_or_else(|p| p.into_inner()).clone();
    let Routing { jobs, realtime } = plan.route(&event, Utc::now());
    let has_jobs = !jobs.is_empty();
    if let Some(route) = realtime {
        let tz = plan.time_zone();
        return answer_realtime(state, route, tz, event, input, normalized, jobs, started).await;
    }
    drop(event);
    match state.store.intake(input, normalized, jobs).await {
        Ok(IntakeOutcome::Accepted { delivery_id }) => {
            tracing::info!(delivery_id = %delivery_id, "delivery accepted");
            crate::metrics::delivery(&source, "accepted");
            if has_jobs {
                state.dispatch_wake.notify_waiters();
            }
            HttpResponse::Ok().json(json!({ "status": "accepted", "delivery_id": delivery_id }))
        }
        Ok(IntakeOutcome::Duplicate { delivery_id }) => {
            tracing::info!(delivery_id = %delivery_id, "duplicate delivery");
            crate::metrics::delivery(&source, "duplicate");
            HttpResponse::Ok().json(json!({ "status": "duplicate", "delivery_id": delivery_id }))
        }
        Err(e) if e.is_unavailable() => unavailable(&e),
        Err(e) => {
            // Not a condition that retrying cures, but the sender still must not think the
            // delivery landed: 503 keeps it retrying while the log says what broke.
            unavailable(&e)
        }
    }
}

/// A real-time route: commit the delivery first (durable before any answer), then answer with
/// the stored reply of a retried request, or compute one within the route's deadline.
#[allow(clippy::too_many_arguments)]
async fn answer_realtime(
    state: &AppState,
    route: RealtimeRoute,
    time_zone: wardhook_sdk::template::Tz,
    mut event: wardhook_sdk::Event,
    input: IntakeInput,
    normalized: crate::normalize::Normalized,
    jobs: Vec<JobSpec>,
    started: Instant,
) -> HttpResponse {
    let source = input.source().to_owned();
    let has_jobs = !jobs.is_empty();
    let (delivery_id, duplicate) = match state.store.intake(input, normalized, jobs).await {
        Ok(IntakeOutcome::Accepted { delivery_id }) => {
            crate::metrics::delivery(&source, "accepted");
            if has_jobs {
                state.dispatch_wake.notify_waiters();
            }
            (delivery_id, false)
        }
        Ok(IntakeOutcome::Duplicate { delivery_id }) => {
            crate::metrics::delivery(&source, "duplicate");
            (delivery_id, true)
        }
        // Not stored means not acknowledged, even mid-call: the sender retries.
        Err(e) => return unavailable(&e),
    };
    if duplicate {
        if let Ok(Some(reply)) = state.store.load_reply(delivery_id.clone()).await {
            tracing::info!(delivery_id = %delivery_id, "retried real-time request; stored reply sent");
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
    let reply = if let Some(handlers) = &route.handlers {
        rt.answer(handlers, &event, budget, time_zone).await
    } else {
        tracing::warn!("real-time route names a handler that is not configured; fallback sent");
        rt.fallback_reply()
    };
    drop(event);
    let elapsed = started.elapsed();
    crate::metrics::realtime_reply(&source, reply.fallback, elapsed);
    let store = state.store.clone();
    let stored = reply.clone();
    let id = delivery_id.clone();
    let latency_ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
    let record = async move { store.record_reply(id, source, stored, latency_ms).await };
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
