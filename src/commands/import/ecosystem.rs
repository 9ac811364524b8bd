//! A PM2 ecosystem file, read as PM2 reads it: `.js`, `.cjs` and `.mjs`
//! evaluated by node ([`super::evaluate`]); `.json` as JSON, or else as the
//! JavaScript object literal PM2 also accepts there; `.yaml` and `.yml` as
//! YAML. Then its apps: `apps` (a list, or one app), a bare list of apps, or
//! a single app.

use std::path::Path;

use serde_json::{Map, Value};

use super::evaluate;

/// One app of the file, as written.
pub(super) type App = Map<String, Value>;

/// What the file holds.
#[derive(Debug)]
pub(super) struct Ecosystem {
    /// Its apps, in order.
    pub apps: Vec<App>,
    /// The other top-level keys (PM2's `deploy`), which are not apps.
    pub others: Vec<String>,
    /// How it was read, when that needs saying.
    pub note: Option<String>,
}

/// Reads `path`.
pub(super) fn read(path: &Path) -> Result<Ecosystem, String> {
    let shown = path.display();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    let text = || std::fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"));
    let mut note = None;
    let config = match extension {
        "js" | "cjs" | "mjs" => {
            text()?;
            evaluate::module(path)?
        }
        "json" => match serde_json::from_str(&text()?) {
            Ok(config) => config,
            Err(strict) => {
                let config = evaluate::object_literal(path).map_err(|e| {
                    format!("{shown} is not JSON ({strict}), nor an object node can read: {e}")
                })?;
                note = Some(format!(
                    "{shown} is not strict JSON ({strict}); read as a JavaScript object \
                     by node, as PM2 reads it"
                ));
                config
            }
        },
        "yaml" | "yml" => {
            serde_norway::from_str(&text()?).map_err(|e| format!("{shown} is not YAML: {e}"))?
        }
        _ => {
            return Err(format!(
                "{shown}: not an ecosystem file; expected .js, .cjs, .mjs, .json, .yaml or .yml"
            ))
        }
    };
    let mut ecosystem = apps(config).map_err(|e| format!("{shown}: {e}"))?;
    ecosystem.note = note;
    Ok(ecosystem)
}

/// The apps of a file's contents, and its other top-level keys.
fn apps(config: Value) -> Result<Ecosystem, String> {
    let (apps, others) = match config {
        Value::Array(apps) => (apps, Vec::new()),
        Value::Object(mut top) => match top.remove("apps") {
            Some(Value::Array(apps)) => (apps, top.keys().cloned().collect()),
            Some(app @ Value::Object(_)) => (vec![app], top.keys().cloned().collect()),
            Some(_) => return Err("`apps` is neither a list nor an app".into()),
            None if top.contains_key("script") => (vec![Value::Object(top)], Vec::new()),
            None => return Err("no `apps` in it".into()),
        },
        _ => return Err("expected an object with `apps`, or a list of apps".into()),
    };
    if apps.is_empty() {
        return Err("`apps` is empty".into());
    }
    let apps = apps
        .into_iter()
        .enumerate()
        .map(|(i, app)| match app {
            Value::Object(app) => Ok(app),
            _ => Err(format!("app {} is not an object", i + 1)),
        })
        .collect::<Result<_, _>>()?;
    Ok(Ecosystem {
        apps,
        others,
        note: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_shapes_pm2_accepts() {
        let one = apps(json!({"apps": {"script": "a.js"}, "deploy": {}})).expect("one app");
        assert_eq!(one.apps.len(), 1);
        assert_eq!(one.others, ["deploy"]);
        assert_eq!(
            apps(json!([{"script": "a"}, {"script": "b"}])).map(|e| e.apps.len()),
            Ok(2)
        );
        assert_eq!(apps(json!({"script": "a"})).map(|e| e.apps.len()), Ok(1));
        for bad in [
            json!({}),
            json!({"apps": []}),
            json!({"apps": 3}),
            json!([1]),
            json!("x"),
        ] {
            assert!(apps(bad.clone()).is_err(), "{bad}");
        }
    }
}
