//! [`Console`] for the SQLite [`Store`]: blocking queries on the blocking pool, token changes
//! and their audit records in one immediate transaction, mirrored after the commit.

use std::collections::VecDeque;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use super::storage::blocking;
use super::{health, tokens};
use crate::audit::commands::SearchArgs;
use crate::audit::{AuditError, AuditRecord, StoredRecord};
use crate::store::console::{
    audit_filter, AuditCheck, AuditCursor, AuditPageRow, Console, DeliveryJob, DeliveryMeta,
    HealthData, RevokeRecord, StoredToken, TokenInfo, TokenInsert,
};
use crate::store::console_bulk::{AttemptPoint, BulkFilter, BulkMatch, BulkStep};
use crate::store::console_calls::{CallQuery, CallSearch};
use crate::store::{Store, StoreFuture};

impl Console for Store {
    fn prepare_console(&self) -> StoreFuture<'_, ()> {
        blocking(self, tokens::prepare)
    }

    fn create_token(
        &self,
        token: StoredToken,
        record: AuditRecord,
    ) -> StoreFuture<'_, TokenInsert> {
        blocking(self, move |s| tokens::create(s, &token, &record))
    }

    fn list_tokens(&self) -> StoreFuture<'_, Vec<TokenInfo>> {
        blocking(self, tokens::list)
    }

    fn revoke_token(&self, name: String, record: RevokeRecord) -> StoreFuture<'_, Option<String>> {
        blocking(self, move |s| tokens::revoke(s, &name, record))
    }

    fn token_by_id(&self, id: String) -> StoreFuture<'_, Option<StoredToken>> {
        blocking(self, move |s| tokens::by_id(s, &id))
    }

    fn health_data(&self, since: DateTime<Utc>) -> StoreFuture<'_, HealthData> {
        blocking(self, move |s| health::health_data(s, since))
    }

    fn delivery_meta(&self, id: String) -> StoreFuture<'_, Option<DeliveryMeta>> {
        blocking(self, move |s| health::delivery_meta(s, &id))
    }

    fn delivery_jobs(&self, id: String) -> StoreFuture<'_, Vec<DeliveryJob>> {
        blocking(self, move |s| health::delivery_jobs(s, &id))
    }

    fn audit_records(&self, args: SearchArgs, limit: usize) -> StoreFuture<'_, Vec<StoredRecord>> {
        blocking(self, move |s| {
            let filter = audit_filter(&args, s.keyring())?;
            let conn = s.connection()?;
            let mut out = VecDeque::with_capacity(limit.min(5000));
            crate::audit::for_each_record(&conn, &filter, |r| {
                if out.len() == limit {
                    out.pop_front();
                }
                out.push_back(r.clone());
                Ok(())
            })?;
            Ok(out.into())
        })
    }

    fn audit_check(&self, audit_dir: PathBuf) -> StoreFuture<'_, AuditCheck> {
        blocking(self, move |s| {
            let conn = s.connection()?;
            let mut sink = Vec::new();
            match crate::audit::commands::verify(
                &conn,
                s.keyring(),
                &audit_dir,
                false,
                true,
                &mut sink,
            ) {
                Ok(summary) => Ok(AuditCheck::Ok {
                    records: summary.database.records,
                    first_seq: summary.database.first_seq,
                    last_seq: summary.database.last_seq,
                    checkpoints_matched: summary.database.checkpoints_matched as u64,
                    mirror_records: summary.mirror.as_ref().map(|m| m.records),
                    warnings: summary.database.warnings,
                }),
                Err(AuditError::VerifyFailed {
                    seq,
                    problem,
                    location,
                }) => Ok(AuditCheck::Failed {
                    seq: Some(seq),
                    problem: problem.to_string(),
                    location,
                }),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn audit_page(
        &self,
        args: SearchArgs,
        after: Option<AuditCursor>,
        limit: usize,
    ) -> StoreFuture<'_, Vec<AuditPageRow>> {
        blocking(self, move |s| {
            super::console_audit::audit_page(s, &args, after.as_ref(), limit)
        })
    }

    fn find_calls(&self, query: CallQuery) -> StoreFuture<'_, CallSearch> {
        blocking(self, move |s| super::console_calls::find_calls(s, &query))
    }

    fn bulk_match(&self, filter: BulkFilter) -> StoreFuture<'_, BulkMatch> {
        blocking(self, move |s| super::console_bulk::bulk_match(s, &filter))
    }

    fn bulk_requeue(
        &self,
        filter: BulkFilter,
        after: i64,
        through: i64,
        batch: usize,
    ) -> StoreFuture<'_, BulkStep> {
        blocking(self, move |s| {
            super::console_bulk::bulk_requeue(s, &filter, after, through, batch)
        })
    }

    fn attempt_points(
        &self,
        since: DateTime<Utc>,
        handler: Option<String>,
        source: Option<String>,
    ) -> StoreFuture<'_, Vec<AttemptPoint>> {
        blocking(self, move |s| {
            super::console_bulk::attempt_points(s, since, handler.as_deref(), source.as_deref())
        })
    }
}
