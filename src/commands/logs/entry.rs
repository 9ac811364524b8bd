//! One journal entry (journalctl's JSON) as one line, PM2's way: the time,
//! the worker's id and who wrote it, then the message.
//!
//! ```text
//! 2026-05-01 12:00:01.250   3|web      | GET / 200
//! 2026-05-01 12:00:02.003   3|sockherd | worker 3 (pid 4242) exited: killed by SIGKILL
//! 2026-05-01 12:00:02.107    |systemd  | web.service: Reloaded.
//! ```
//!
//! A worker's own line is `ID|APP`; the manager's entries are `sockherd`,
//! with the id of the worker they are about; anything else in the unit goes
//! by its identifier.

use serde_json::Value;

use crate::commands::local_time::timestamp;

/// Formats the entries of one app.
pub(super) struct Format {
    app: String,
    /// `app/`, the identifiers of its workers start so.
    prefix: String,
    /// The width of the writer's column, the widest seen so far.
    width: usize,
}

impl Format {
    pub(super) fn new(app: &str) -> Format {
        Format {
            app: app.to_owned(),
            prefix: format!("{app}/"),
            width: app.chars().count().max("sockherd".len()),
        }
    }

    /// The line for `entry`; `None` for an entry with no message.
    pub(super) fn line(&mut self, entry: &Value) -> Option<String> {
        let message = text(entry.get("MESSAGE")?)?;
        let identifier = field(entry, "SYSLOG_IDENTIFIER");
        let worker = identifier
            .as_deref()
            .and_then(|id| id.strip_prefix(&self.prefix))
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        let (id, who) = match worker {
            Some(id) => (id.to_owned(), self.app.clone()),
            None if field(entry, "SOCKHERD_APP").is_some() => (
                field(entry, "SOCKHERD_WORKER_ID").unwrap_or_default(),
                "sockherd".to_owned(),
            ),
            None => (String::new(), identifier.unwrap_or_else(|| "?".to_owned())),
        };
        self.width = self.width.max(who.chars().count());
        let time = field(entry, "__REALTIME_TIMESTAMP")
            .and_then(|usec| usec.parse().ok())
            .map_or_else(|| " ".repeat(23), timestamp);
        Some(format!(
            "{time} {id:>3}|{who:<width$} | {message}",
            width = self.width
        ))
    }
}

/// A field's value as text: journalctl writes a string, an array of bytes
/// for a value that is not UTF-8, or an array of those for a field given
/// more than once (the first is taken).
fn field(entry: &Value, name: &str) -> Option<String> {
    text(entry.get(name)?)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Array(items) if items.iter().all(Value::is_u64) => {
            let bytes: Vec<u8> = items
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            Some(String::from_utf8_lossy(&bytes).into_owned())
        }
        Value::Array(items) => items.first().and_then(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workers_manager_and_others() {
        let mut format = Format::new("web");
        let worker = json!({"MESSAGE": "GET /", "SYSLOG_IDENTIFIER": "web/3"});
        let line = format.line(&worker).expect("a line");
        assert!(line.ends_with("   3|web      | GET /"), "{line:?}");
        let event = json!({"MESSAGE": "worker 3 exited", "SYSLOG_IDENTIFIER": "web",
                           "SOCKHERD_APP": "web", "SOCKHERD_WORKER_ID": "3"});
        let line = format.line(&event).expect("a line");
        assert!(
            line.ends_with("   3|sockherd | worker 3 exited"),
            "{line:?}"
        );
        let systemd = json!({"MESSAGE": "Reloaded.", "SYSLOG_IDENTIFIER": "systemd"});
        assert!(format
            .line(&systemd)
            .expect("a line")
            .ends_with("    |systemd  | Reloaded."));
        let bytes = json!({"MESSAGE": [104, 105, 255], "SYSLOG_IDENTIFIER": "web/0"});
        assert!(format
            .line(&bytes)
            .expect("a line")
            .ends_with("| hi\u{fffd}"));
        assert_eq!(format.line(&json!({"SYSLOG_IDENTIFIER": "web/0"})), None);
        let other_app = json!({"MESSAGE": "x", "SYSLOG_IDENTIFIER": "webby/1"});
        assert!(format
            .line(&other_app)
            .expect("a line")
            .contains("    |webby/1"));
    }
}
