//! Running the built application: audit the start, serve the senders' and the operators'
//! listeners, run the dispatch workers and the periodic tallies, and on the shutdown signal
//! drain everything in order and audit the stop.

use std::future::Future;
use std::sync::Arc;

use super::Application;
use crate::listener::REJECTION_AUDIT_INTERVAL;

impl Application {
    /// Serve until `shutdown` completes, then stop accepting and let in-flight requests finish
    /// within the configured shutdown timeout.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = self.listener.server.handle();
        self.storage
            .store
            .record_audit(crate::audit::lifecycle_record(
                crate::audit::Action::ConfigLoaded,
                Some(&self.config_sha256),
            ))
            .await
            .map_err(std::io::Error::other)?;
        self.storage
            .store
            .record_audit(crate::audit::lifecycle_record(
                crate::audit::Action::ServerStarted,
                None,
            ))
            .await
            .map_err(std::io::Error::other)?;
        if let Err(e) = self.storage.store.checkpoint_audit().await {
            tracing::error!(error = %e, "cannot write the audit checkpoint at start");
        }
        let admin = self.admin.map(|a| {
            let port = a.port();
            let server = a.into_server();
            let handle = server.handle();
            tracing::info!(admin_port = port, "admin console listening");
            (tokio::spawn(server), handle)
        });
        let admin_handle = admin.as_ref().map(|(_, h)| h.clone());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stop_tx = Arc::new(stop_tx);
        let stop_workers = stop_tx.clone();
        // A relay stores nothing the rules look at; an inside node evaluates like any node.
        let alerts = self
            .relay_pull
            .is_none()
            .then(|| tokio::spawn(self.alerts.clone().run(stop_rx.clone())));
        let puller = self
            .relay_puller
            .map(|p| tokio::spawn(p.run(stop_rx.clone())));
        let relay_pull = self.relay_pull.map(|p| {
            tracing::info!(pull_port = p.port, "relay pull listener serving");
            let handle = p.server.handle();
            (tokio::spawn(p.server), handle)
        });
        let workers =
            (self.dispatch_workers > 0).then(|| tokio::spawn(self.dispatcher.clone().run(stop_rx)));
        // Audit forwarding stops last, after the stop record, so that record goes out too.
        let (stop_forwarding, forwarding) =
            crate::audit::forward::start(self.audit_forward.clone(), || {
                self.storage.store.audit_forward_store()
            });
        // The server future must keep being polled while it drains, so the stop request runs
        // beside it rather than replacing it.
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutdown requested; draining in-flight requests and handler attempts");
            let _ = stop_tx.send(true);
            if let Some(a) = admin_handle {
                a.stop(true).await;
            }
            handle.stop(true).await;
        });
        let state = self.reloader.state.clone();
        let (stop_tally, mut tally_stopped) = tokio::sync::oneshot::channel::<()>();
        let rejections_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(REJECTION_AUDIT_INTERVAL);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => state.flush_rejections().await,
                    _ = &mut tally_stopped => break,
                }
            }
            // No request is in flight any more: what was tallied since the last interval is
            // written before the stop record.
            state.flush_rejections().await;
        });
        let clock = self.clock.clone();
        let clock_dir = self.data_dir.clone();
        let clock_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                let (c, d) = (clock.clone(), clock_dir.clone());
                let _ = tokio::task::spawn_blocking(move || c.write(&d)).await;
            }
        });
        let served = self.listener.server.await;
        clock_task.abort();
        let _ = stop_tally.send(());
        let _ = rejections_task.await;
        if let Err(e) = self.clock.write(&self.data_dir) {
            tracing::warn!(error = %e, "cannot write the sender clock summary");
        }
        if let Some((task, handle)) = admin {
            // The senders' server stopped (signal or handle): the console goes with it.
            handle.stop(true).await;
            let _ = task.await;
        }
        if let Some((task, handle)) = relay_pull {
            handle.stop(true).await;
            let _ = task.await;
        }
        // However the server stopped (signal or handle), the workers stop claiming now.
        let _ = stop_workers.send(true);
        if let Some(p) = puller {
            let _ = p.await;
        }
        if let Some(w) = workers {
            let _ = w.await;
        }
        // Intakes of abandoned requests still queued commit before the stop record.
        self.storage.finish_intake().await;
        if let Some(a) = alerts {
            let _ = a.await;
        }
        if let Err(e) = self
            .storage
            .store
            .record_audit(crate::audit::lifecycle_record(
                crate::audit::Action::ServerStopped,
                None,
            ))
            .await
        {
            tracing::error!(error = %e, "cannot audit the server stop");
        }
        // The mirror task stops and the mirror catches up with the stop record, signed.
        let mut storage = self.storage;
        if let Err(e) = storage.close().await {
            tracing::error!(error = %e, "cannot write the audit checkpoint at stop");
        }
        let _ = stop_forwarding.send(true);
        if let Some(f) = forwarding {
            let _ = f.await;
        }
        self.traces.shutdown().await;
        served
    }
}
