//! The accessibility check of the browser tests: axe-core (installed from npm by `.ci/run`
//! into `/opt/wardhook-test-node`, or wherever `WARDHOOK_TEST_AXE` points) is injected into
//! the page over WebDriver and run on the whole document; any serious or critical violation
//! fails the test with the rule, its help text and the elements it found. Without axe-core
//! the check says so and is skipped — except under `CI`, where that is a failure.

use std::sync::OnceLock;

use serde_json::json;

use crate::browser::Browser;

const DEFAULT_AXE: &str = "/opt/wardhook-test-node/node_modules/axe-core/axe.min.js";

fn axe_source() -> Option<&'static str> {
    static SOURCE: OnceLock<Option<String>> = OnceLock::new();
    SOURCE
        .get_or_init(|| {
            let path = std::env::var("WARDHOOK_TEST_AXE").unwrap_or_else(|_| DEFAULT_AXE.into());
            match std::fs::read_to_string(&path) {
                Ok(s) => Some(s),
                Err(e) => {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "axe-core is not at {path} ({e}); .ci/run installs it with npm"
                    );
                    eprintln!(
                        "SKIPPED: axe-core is not at {path} ({e}); the accessibility checks did \
                         not run (npm install --prefix /opt/wardhook-test-node axe-core)"
                    );
                    None
                }
            }
        })
        .as_deref()
}

/// Runs axe-core in the page and reports serious and critical violations (rule, impact, help,
/// and up to five elements each).
const RUN_AXE: &str = r#"
const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] })
  .then(r => done(r.violations
    .filter(v => v.impact === 'serious' || v.impact === 'critical')
    .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ' :: ' + n.failureSummary) }))))
  .catch(e => done([{ id: 'axe-error', help: String(e) }]));
"#;

impl Browser {
    /// Check the current page with axe-core; `page` names it in the failure.
    pub(crate) async fn axe(&self, page: &str) {
        let Some(source) = axe_source() else {
            return;
        };
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": format!("{source}\n;return typeof axe;"), "args": [] }),
        )
        .await;
        let found = self
            .cmd(
                "POST",
                "/execute/async",
                json!({ "script": RUN_AXE, "args": [] }),
            )
            .await;
        let found = found.as_array().cloned().unwrap_or_default();
        assert!(
            found.is_empty(),
            "{page}: axe-core found serious or critical violations: {:#}",
            serde_json::Value::Array(found)
        );
    }

    /// Run `script` in the page and return its value.
    pub(crate) async fn eval(&self, script: &str) -> serde_json::Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
        .await
    }

    /// Press the Tab key once.
    pub(crate) async fn tab(&self) {
        self.cmd(
            "POST",
            "/actions",
            json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
                { "type": "keyDown", "value": "\u{E004}" },
                { "type": "keyUp", "value": "\u{E004}" }
            ]}]}),
        )
        .await;
    }
}
