//! `doctor` on real files: keys, certificates, a SQLite store, its audit chain.
#![allow(clippy::unwrap_used)]

mod checks {
    use std::os::unix::fs::PermissionsExt as _;

    use super::super::*;
    use crate::certs::{write_file, DevCa};
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::{Store, StoreOptions};

    /// A complete installation in a temporary folder: keys apart from data, certificate for
    /// `cert_days`, database with one table.
    struct Setup {
        _dir: tempfile::TempDir,
        config: PathBuf,
        key: PathBuf,
    }

    fn setup(cert_days: i64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["keys", "certs", "data"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        let key = root.join("keys/master.key");
        let master = MasterKey::generate_file(&key).unwrap();
        let issued = DevCa::generate()
            .unwrap()
            .issue_server(&["localhost"], cert_days)
            .unwrap();
        write_file(
            &root.join("certs/server.crt"),
            issued.cert_pem.as_bytes(),
            0o644,
        )
        .unwrap();
        write_file(
            &root.join("certs/server.key"),
            issued.key_pem.as_bytes(),
            0o600,
        )
        .unwrap();
        let db = root.join("data/wardhook.db");
        let store =
            Store::open(&db, Keyring::from_master(&master), StoreOptions::default()).unwrap();
        drop(store);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = root.join("wardhook.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:8443\"\n\
                 tls = {{ cert = \"{r}/certs/server.crt\", key = \"{r}/certs/server.key\" }}\n\
                 [storage]\npath = \"{r}/data/wardhook.db\"\n\
                 [keys]\nmaster_key_file = \"{r}/keys/master.key\"\n\
                 [audit]\ndir = \"{r}/data/audit\"\n\
                 [bogus]\nunknown = true\n",
                r = root.display()
            ),
        )
        .unwrap();
        Setup {
            _dir: dir,
            config,
            key,
        }
    }

    /// Default thresholds, except that the test machine's free disk space cannot fail a test.
    fn options() -> DoctorOptions {
        DoctorOptions {
            disk_warn_bytes: 0,
            disk_warn_percent: 0,
            disk_fail_bytes: 0,
            disk_fail_percent: 0,
            ..DoctorOptions::default()
        }
    }

    fn run(config: &Path) -> (DoctorReport, String) {
        let mut out = Vec::new();
        let report = run_doctor_with(config, &options(), &mut out).unwrap();
        (report, String::from_utf8(out).unwrap())
    }

    fn status(report: &DoctorReport, name: &str) -> Status {
        report.named(name).map(|c| c.status).max().unwrap()
    }

    #[test]
    fn healthy_setup_passes_every_check() {
        let s = setup(365);
        let (report, text) = run(&s.config);
        assert_eq!(report.worst(), Status::Ok, "{text}");
        assert!(report.passed());
        for name in [
            "config",
            "keys.master_key_file",
            "server.tls.cert",
            "server.tls.key",
            "storage.path (disk)",
            "storage.path (database)",
            "audit",
        ] {
            assert_eq!(status(&report, name), Status::Ok, "{name}: {text}");
        }
        assert!(text.contains("PRAGMA integrity_check ok"), "{text}");
        assert!(!text.contains("fix:"), "{text}");
    }

    #[test]
    fn world_readable_key_file_fails_with_a_fix() {
        let s = setup(365);
        std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(
            status(&report, "keys.master_key_file"),
            Status::Fail,
            "{text}"
        );
        assert!(!report.passed());
        assert!(text.contains("mode 0644"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn certificate_expiring_in_ten_days_is_flagged() {
        let s = setup(10);
        let (report, text) = run(&s.config);
        let cert = report.named("server.tls.cert").next().unwrap();
        assert_eq!(cert.status, Status::Warn, "{text}");
        assert!(cert.message.contains("expires in"), "{text}");
        assert!(
            cert.fix.as_deref().unwrap().contains("systemctl reload"),
            "{text}"
        );
        // A warning does not fail the run.
        assert!(report.passed());
    }

    #[test]
    fn expired_certificate_fails() {
        let s = setup(365);
        let later = DoctorOptions {
            now: Utc::now() + chrono::Duration::days(400),
            ..options()
        };
        let report = run_doctor_with(&s.config, &later, &mut Vec::new()).unwrap();
        assert_eq!(status(&report, "server.tls.cert"), Status::Fail);
    }

    /// The damaged database is a file no store ever opened. The store `setup` opened is
    /// dropped, but its writer and checkpointer threads end, and close their connections, only
    /// after `drop` returns; a connection of theirs opened by path at the wrong moment switched
    /// a database recreated at that path to WAL mode, its rows went to a `-wal` file and the
    /// garbage written over the main file was masked, so the test failed now and then. The
    /// header check below shows the rows are in the file that is damaged.
    #[test]
    fn corrupt_database_fails_integrity_check() {
        let s = setup(365);
        let root = s.config.parent().unwrap();
        let db = root.join("data/damaged.db");
        // A database with a few pages of rows, then garbage over the middle of page 2.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE t (x TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT printf('%0100d', i) FROM n;",
        )
        .unwrap();
        drop(conn);
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 3 * 4096);
        // Rollback-journal mode (header bytes 18 and 19 are 1): every row is in this file.
        assert_eq!(&bytes[18..20], &[1, 1], "not a rollback-journal database");
        assert!(!root.join("data/damaged.db-wal").exists());
        bytes[4096 + 8..4096 + 1024].fill(0xA5);
        std::fs::write(&db, &bytes).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("data/wardhook.db", "data/damaged.db");
        std::fs::write(&s.config, config).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(
            status(&report, "storage.path (database)"),
            Status::Fail,
            "{text}"
        );
        assert!(text.contains("integrity"), "{text}");
        // The audit chain is not checked on a damaged database.
        assert_eq!(status(&report, "audit"), Status::Warn, "{text}");
    }

    #[test]
    fn key_next_to_the_database_is_a_warning() {
        let s = setup(365);
        let root = s.config.parent().unwrap();
        let moved = root.join("data/master.key");
        std::fs::rename(&s.key, &moved).unwrap();
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("keys/master.key", "data/master.key");
        std::fs::write(&s.config, text).unwrap();
        let (report, out) = run(&s.config);
        assert_eq!(
            status(&report, "keys.master_key_file"),
            Status::Warn,
            "{out}"
        );
    }

    #[test]
    fn unreadable_or_broken_config_is_one_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (report, _) = run(&dir.path().join("missing.toml"));
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.worst(), Status::Fail);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[server\nlisten = ").unwrap();
        let (report, text) = run(&bad);
        assert_eq!(report.checks[0].name, "config");
        assert_eq!(report.worst(), Status::Fail, "{text}");
    }

    #[test]
    fn tiny_disk_threshold_fails() {
        let s = setup(365);
        let strict = DoctorOptions {
            disk_fail_bytes: u64::MAX,
            ..options()
        };
        let report = run_doctor_with(&s.config, &strict, &mut Vec::new()).unwrap();
        assert_eq!(status(&report, "storage.path (disk)"), Status::Fail);
    }

    #[tokio::test]
    async fn audit_chain_verifies_under_its_key_and_fails_under_another() {
        use crate::normalize::{normalize, Envelope, IntakeInput};
        use crate::store::JobSpec;
        let s = setup(365);
        let root = s.config.parent().unwrap().to_path_buf();
        let master = MasterKey::load(&s.key).unwrap();
        let store = Store::open(
            &root.join("data/wardhook.db"),
            Keyring::from_master(&master),
            StoreOptions::default(),
        )
        .unwrap();
        let input = IntakeInput::for_test(
            "nextphone",
            Envelope::NextPhone,
            br#"{"event":"call.ended","data":{"call_id":"c1","caller":{"name":"Zqx Doe"}}}"#,
        );
        let mut n = normalize(&input, Utc::now()).unwrap();
        store
            .intake(input, &mut n, vec![JobSpec::new("crm")])
            .await
            .unwrap();

        let (report, text) = run(&s.config);
        let audit = report.named("audit").next().unwrap();
        assert_eq!(audit.status, Status::Ok, "{text}");
        assert!(!audit.message.contains("0 record(s)"), "{text}");
        assert!(!text.contains("Zqx"), "doctor prints no payload: {text}");

        // The same database under a different master key (a wrong key restored) fails.
        std::fs::remove_file(&s.key).unwrap();
        MasterKey::generate_file(&s.key).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(status(&report, "audit"), Status::Fail, "{text}");
        drop(store);
    }
}

mod clock_tests {
    use super::super::clocks::check_sender_clocks;
    use super::super::*;

    #[test]
    fn a_drifting_sender_clock_is_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = crate::listener::clock::SkewTracker::default();
        let now = Utc::now();
        tracker.record("steady", now, now);
        tracker.record("drifty", now + chrono::Duration::seconds(95), now);
        tracker.write(dir.path()).expect("write");
        let check = check_sender_clocks(&dir.path().join("wardhook.db"));
        assert_eq!(check.status, Status::Warn, "{}", check.message);
        assert!(
            check.message.contains("drifty up to 95 s"),
            "{}",
            check.message
        );
        assert!(!check.message.contains("steady"));
    }
}
