//! A fresh, empty PostgreSQL database per test, so tests run in parallel without seeing each
//! other's rows. The server comes from `WARDHOOK_TEST_POSTGRES_URL` (a role allowed to create
//! databases); without it the PostgreSQL tests skip, except under CI, which installs and
//! starts Debian's PostgreSQL (`.ci/run`) and so must never skip them.

use std::time::Duration;

use zeroize::Zeroizing;

use super::{PgSettings, PgTls};

/// The variable naming the test server.
pub(crate) const URL_VAR: &str = "WARDHOOK_TEST_POSTGRES_URL";

/// A database created for one test and dropped when the value is dropped.
#[derive(Debug)]
pub(crate) struct TestDb {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDb {
    /// Create the database, or `None` (after printing why) when no server is configured.
    pub(crate) async fn create() -> Option<Self> {
        let Ok(admin_url) = std::env::var(URL_VAR) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "the PostgreSQL tests need a server: set {URL_VAR} (.ci/run starts one)"
            );
            eprintln!("SKIPPED: {URL_VAR} is not set; PostgreSQL backend tests did not run");
            return None;
        };
        let name = format!("wardhook_test_{}", uuid::Uuid::new_v4().simple());
        let client = connect(&admin_url).await;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_dbname(&admin_url, &name);
        Some(Self {
            admin_url,
            name,
            url,
        })
    }

    /// Settings for a node called `node_id` on this database.
    pub(crate) fn settings(&self, node_id: &str) -> PgSettings {
        PgSettings {
            url: Zeroizing::new(self.url.clone()),
            tls: PgTls::Disable,
            pool_size: 4,
            node_id: node_id.to_owned(),
            wait_timeout: Duration::from_secs(10),
        }
    }

    /// A plain client on this database, for arranging and inspecting rows directly.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs inside the test's runtime, which cannot block on itself.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let client = connect(&admin_url).await;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    client
}

/// `url` with its database replaced by `name` (URL or `key=value` form).
fn with_dbname(url: &str, name: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if matches!(u.scheme(), "postgres" | "postgresql") => {
            u.set_path(&format!("/{name}"));
            u.to_string()
        }
        _ => format!("{url} dbname={name}"),
    }
}
