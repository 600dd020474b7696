//! [`Console`] for the PostgreSQL store: every read spans the cluster, and token changes carry
//! their audit record on this node's chain in the same transaction.

use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::{health, tokens, verify_audit, PgStore};
use crate::audit::commands::SearchArgs;
use crate::audit::{AuditRecord, StoredRecord};
use crate::store::console::{
    audit_filter, AuditCheck, AuditCursor, AuditPageRow, Console, DeliveryJob, DeliveryMeta,
    HealthData, RevokeRecord, StoredToken, TokenInfo, TokenInsert,
};
use crate::store::console_bulk::{AttemptPoint, BulkFilter, BulkMatch, BulkStep};
use crate::store::console_calls::{CallQuery, CallSearch};
use crate::store::{StoreError, StoreFuture};

impl Console for PgStore {
    fn prepare_console(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move { self.track(tokens::prepare(self).await) })
    }

    fn create_token(
        &self,
        token: StoredToken,
        record: AuditRecord,
    ) -> StoreFuture<'_, TokenInsert> {
        Box::pin(async move { self.track(tokens::create(self, &token, &record).await) })
    }

    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>> {
        Box::pin(async move { self.track(tokens::list(self).await) })
    }

    fn revoke_token(&self, name: String, record: RevokeRecord) -> StoreFuture<'_, Option<String>> {
        Box::pin(async move { self.track(tokens::revoke(self, &name, record).await) })
    }

    fn token_by_id(&self, id: String) -> StoreFuture<'_, Option<StoredToken>> {
        Box::pin(async move { self.track(tokens::by_id(self, &id).await) })
    }

    fn health_data(&self, since: DateTime<Utc>) -> StoreFuture<'_, HealthData> {
        Box::pin(async move { self.track(health::health_data(self, since).await) })
    }

    fn delivery_meta(&self, id: String) -> StoreFuture<'_, Option<DeliveryMeta>> {
        Box::pin(async move { self.track(health::delivery_meta(self, &id).await) })
    }

    fn delivery_jobs(&self, id: String) -> StoreFuture<'_, Vec<DeliveryJob>> {
        Box::pin(async move { self.track(health::delivery_jobs(self, &id).await) })
    }

    fn audit_records(&self, args: SearchArgs, limit: usize) -> StoreFuture<'_, Vec<StoredRecord>> {
        Box::pin(async move {
            let filter = audit_filter(&args, self.keyring())?;
            self.track(health::audit_records(self, &filter, limit).await)
        })
    }

    /// Every node's chain (there is no JSONL mirror or checkpoint file to check here).
    fn audit_check(&self, _audit_dir: PathBuf) -> StoreFuture<'_, AuditCheck> {
        Box::pin(async move {
            match verify_audit(self).await {
                Ok(nodes) => Ok(AuditCheck::Ok {
                    records: nodes.iter().map(|n| n.report.records).sum(),
                    first_seq: nodes.iter().filter_map(|n| n.report.first_seq).min(),
                    last_seq: nodes.iter().filter_map(|n| n.report.last_seq).max(),
                    checkpoints_matched: 0,
                    mirror_records: None,
                    warnings: nodes
                        .iter()
                        .flat_map(|n| {
                            n.report
                                .warnings
                                .iter()
                                .map(move |w| format!("node {}: {w}", n.node_id))
                        })
                        .collect(),
                }),
                Err(StoreError::Audit(reason)) => Ok(AuditCheck::Failed {
                    seq: None,
                    problem: reason,
                    location: "database".into(),
                }),
                Err(e) => self.track(Err(e)),
            }
        })
    }

    fn audit_page(
        &self,
        args: SearchArgs,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<AuditPageRow>> {
        Box::pin(async move {
            self.track(super::console_audit::audit_page(self, &args, after.as_ref(), limit).await)
        })
    }

    fn find_calls(&self, query: CallQuery) -> StoreFuture<'_, CallSearch> {
        Box::pin(async move { self.track(super::console_calls::find_calls(self, &query).await) })
    }

    fn bulk_match(&self, filter: BulkFilter) -> StoreFuture<'_, BulkMatch> {
        Box::pin(async move { self.track(super::console_bulk::bulk_match(self, &filter).await) })
    }

    fn bulk_requeue(
        &self,
        filter: BulkFilter,
        after: i64,
        through: i64,
        batch: usize,
    ) -> StoreFuture<'_, BulkStep> {
        Box::pin(async move {
            self.track(
                super::console_bulk::bulk_requeue(self, &filter, after, through, batch).await,
            )
        })
    }

    fn attempt_points(
        &self,
        since: DateTime<Utc>,
        handler: Option<String>,
        source: Option<String>,
    ) -> StoreFuture<'_, Vec<AttemptPoint>> {
        Box::pin(async move {
            self.track(
                super::console_bulk::attempt_points(
                    self,
                    since,
                    handler.as_deref(),
                    source.as_deref(),
                )
                .await,
            )
        })
    }
}
