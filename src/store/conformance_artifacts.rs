//! The artifact table's contract, run against both backends like [`super::conformance`].

use chrono::{Duration, Utc};
use zeroize::Zeroizing;

use super::artifacts::{ArtifactFilter, ArtifactReader, NewArtifact};
use super::conformance::{both_backends, operator, Harness};
use super::sqlite::tests::nextphone;
use super::types::IntakeOutcome;
use super::StoreError;

fn new_artifact(id: &str, delivery_id: &str, key: u8) -> NewArtifact {
    NewArtifact {
        id: id.into(),
        delivery_id: delivery_id.into(),
        field: "RecordingUrl".into(),
        content_type: "audio/x-wav".into(),
        size: 1234,
        sha256: "ab".repeat(32),
        file_key: Zeroizing::new(vec![key; 32]),
    }
}

/// A delivery received three days ago, so `purge` up to now may take its period.
async fn delivery(store: &dyn super::Storage, call: &str) -> String {
    let input = nextphone("call.ended", call);
    let mut normalized =
        crate::normalize::normalize(&input, Utc::now() - Duration::days(3)).expect("normalizes");
    match store
        .intake(input, &mut normalized, vec![super::JobSpec::new("crm")])
        .await
        .expect("submit")
    {
        IntakeOutcome::Accepted { delivery_id, .. } => delivery_id.to_string(),
        other => panic!("accepted expected, got {other:?}"),
    }
}

async fn an_artifact_is_recorded_once_read_with_an_audit_record_and_shredded_by_purge(h: Harness) {
    let store = h.node("node-a").await;
    let d1 = delivery(&*store, "c1").await;
    let d2 = delivery(&*store, "c2").await;
    let arts = store.artifacts();
    let first = arts
        .record_artifact(new_artifact("art_one", &d1, 7))
        .await
        .expect("record");
    assert_eq!((first.size, first.readable), (1234, true));
    // A second capture of the same field (a retried job) keeps the first row.
    let again = arts
        .record_artifact(new_artifact("art_two", &d1, 8))
        .await
        .expect("record again");
    assert_eq!(again.id, "art_one");
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'artifact_captured'")
            .await,
        1
    );
    assert_eq!(
        h.count("SELECT COUNT(*) FROM artifacts").await,
        1,
        "one row per delivery and field"
    );
    let listed = arts
        .list_artifacts(ArtifactFilter::default())
        .await
        .expect("list");
    assert_eq!(listed, vec![first.clone()]);
    assert_eq!(
        arts.delivery_artifacts(d1.clone()).await.expect("of d1"),
        vec![first.clone()]
    );
    assert_eq!(
        arts.artifact("art_one".into()).await.expect("by id"),
        Some(first.clone()),
        "metadata by id, without a read"
    );
    assert_eq!(
        arts.artifact("art_nothing".into()).await.expect("by id"),
        None
    );

    let opened = arts
        .open_artifact("art_one".into(), ArtifactReader::Person(operator()))
        .await
        .expect("open");
    assert_eq!(&opened.file_key[..], &[7u8; 32][..]);
    let handler = |delivery_id: &str| ArtifactReader::Handler {
        handler: "ehr".into(),
        delivery_id: delivery_id.into(),
    };
    arts.open_artifact("art_one".into(), handler(&d1))
        .await
        .expect("its delivery's handler opens it");
    assert!(matches!(
        arts.open_artifact("art_one".into(), handler(&d2)).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'payload_read'
               AND detail LIKE '%\"object_kind\":\"artifact\"%'"
        )
        .await,
        2
    );

    arts.record_vendor_deletion("art_one".into(), "api.twilio.com".into(), Some(204), true)
        .await
        .expect("vendor deletion");
    let listed = arts
        .list_artifacts(ArtifactFilter::default())
        .await
        .expect("list");
    assert!(listed[0].vendor_deleted_at.is_some());
    assert_eq!(
        h.count("SELECT COUNT(*) FROM audit_log WHERE action = 'artifact_deleted_at_vendor'")
            .await,
        1
    );

    // Purging the delivery's period destroys the key the file key is sealed under.
    store.purge(Utc::now(), operator()).await.expect("purge");
    assert!(matches!(
        arts.open_artifact("art_one".into(), ArtifactReader::Person(operator()))
            .await,
        Err(StoreError::KeyDestroyed)
    ));
    let listed = arts
        .list_artifacts(ArtifactFilter::default())
        .await
        .expect("list");
    assert!(!listed[0].readable);
    h.verify_audit().await.expect("audit chain verifies");
}

both_backends!(an_artifact_is_recorded_once_read_with_an_audit_record_and_shredded_by_purge);
