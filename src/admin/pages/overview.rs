//! The overview: queue, dead letters and each source's and handler's last 24 hours.

use std::fmt::Write as _;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};

use super::guard::page_guard;
use crate::admin::api;
use crate::admin::auth::Permission;
use crate::admin::charts::{hourly_latency, hourly_rate, sparkline};
use crate::admin::layout::{api_error_page, badge, esc, html, page, qv, rate_text};
use crate::admin::Console;

pub(super) async fn overview(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    let s =
        or_return!(page_guard(&console, &req, Permission::ReadMetadata, ("health", None)).await);
    let h = match api::health_of(&console).await {
        Ok(h) => h,
        Err(e) => return api_error_page(&e, Some(&s)),
    };
    let mut b = String::new();
    let _ = write!(
        b,
        "<div class=\"cards\">\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">jobs queued</div></div>\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">oldest due job (s)</div></div>\
         <div class=\"card\"><div class=\"n\">{}</div><div class=\"l\">dead letters {}</div></div>\
         <div class=\"card\"><div class=\"n\">{} / {}</div><div class=\"l\">sources / handlers</div></div>\
         </div>",
        h.queue_depth,
        h.oldest_due_age_secs.unwrap_or(0),
        h.dead_letters,
        if h.dead_letters > 0 { badge("dead") } else { badge("ok") },
        h.sources.len(),
        h.handlers.len()
    );
    b.push_str(
        "<h2>Sources — last 24 h</h2><div class=\"table-wrap\"><table><thead><tr>\
        <th>source</th><th>accepted</th><th class=\"hide-narrow\">duplicate</th>\
        <th>quarantined</th><th>rejected</th><th>success rate</th><th>per hour</th>\
        <th class=\"hide-narrow\">mean ack</th></tr></thead><tbody>",
    );
    for src in &h.sources {
        let link = format!(
            "<a href=\"/sources/{}\">{}</a>",
            qv(&src.name),
            esc(&src.name)
        );
        let _ = write!(
            b,
            "<tr><td>{link}</td><td class=\"num\">{}</td><td class=\"num hide-narrow\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td>\
             <td class=\"num hide-narrow\">{}</td></tr>",
            src.accepted,
            src.duplicate,
            src.quarantined,
            src.rejected,
            rate_text(src.success_rate),
            sparkline(
                &hourly_rate(&src.hourly),
                1.0,
                &format!("{}: success rate per hour, last 24 h", src.name)
            ),
            {
                let max = src
                    .ack_latency_ms_hourly
                    .iter()
                    .flatten()
                    .fold(0.0_f64, |a, b| a.max(*b));
                format!(
                    "{} {}",
                    src.ack_latency_ms_mean
                        .map_or_else(|| "—".to_owned(), |m| format!("{m:.1} ms")),
                    sparkline(
                        &src.ack_latency_ms_hourly,
                        max.max(1.0),
                        &format!("{}: mean answer latency per hour, last 24 h", src.name)
                    )
                )
            }
        );
    }
    b.push_str("</tbody></table></div>");
    b.push_str(
        "<h2>Handlers — last 24 h</h2><div class=\"table-wrap\"><table><thead><tr>\
        <th>handler</th><th>attempts</th><th>success rate</th><th>per hour</th>\
        <th>latency p50 / p95</th><th class=\"hide-narrow\">latency per hour</th><th>circuit</th><th class=\"hide-narrow\">queued</th>\
        <th>dead</th></tr></thead><tbody>",
    );
    for hd in &h.handlers {
        let lat = hourly_latency(&hd.hourly);
        let max = lat.iter().flatten().fold(0.0_f64, |a, b| a.max(*b));
        let link = format!(
            "<a href=\"/handlers/{}\">{}</a>",
            qv(&hd.name),
            esc(&hd.name)
        );
        let _ = write!(
            b,
            "<tr><td>{link}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"hide-narrow\">{}</td><td>{}</td><td class=\"num hide-narrow\">{}</td><td class=\"num\">{}</td></tr>",
            hd.attempts,
            rate_text(hd.success_rate),
            sparkline(
                &hourly_rate(&hd.hourly),
                1.0,
                &format!("{}: success rate per hour, last 24 h", hd.name)
            ),
            match (hd.latency_ms_p50, hd.latency_ms_p95) {
                (Some(a), Some(b)) => format!("{a} / {b} ms"),
                _ => "—".to_owned(),
            },
            sparkline(
                &lat,
                max,
                &format!("{}: mean latency per hour, last 24 h (max {max:.0} ms)", hd.name)
            ),
            badge(hd.circuit),
            hd.queue_depth,
            hd.dead_letters
        );
    }
    b.push_str("</tbody></table></div>");
    html(StatusCode::OK, page("Overview", Some(&s), "/", &b))
}
