//! A stand-in CRM for benchmarks of real-time routes: plain HTTP on loopback, answering
//! `GET /contacts?phone=…` with a fixed JSON contact after an optional delay.
//!
//! `wardhook-crm-stub --port 18080 [--delay-ms 0]`. Loopback only; it serves until killed.

use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;

/// A stand-in CRM for benchmarks.
#[derive(Debug, Parser)]
struct Args {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 18080)]
    port: u16,
    /// Delay before each answer, milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let delay = Duration::from_millis(args.delay_ms);
    HttpServer::new(move || {
        App::new().route(
            "/contacts",
            web::get().to(move || async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                HttpResponse::Ok().json(serde_json::json!({
                    "id": "C-1001",
                    "first_name": "Dana",
                    "vip": "yes"
                }))
            }),
        )
    })
    .workers(1)
    .bind(("127.0.0.1", args.port))?
    .run()
    .await
}
