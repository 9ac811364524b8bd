//! The manager's own events (`tracing`), formatted on the thread that logs
//! them and handed to the log thread as bytes ([`super::pump::event`]),
//! which never waits.
//!
//! For the journal, [`Journal`] turns an event into one native-protocol
//! entry: `PRIORITY` (error 3, warning 4, info 6, debug 7),
//! `SYSLOG_IDENTIFIER` and `SOCKHERD_APP` (the app), `MESSAGE`, and every
//! other field `foo` as `SOCKHERD_FOO`, plus `TARGET`, `CODE_FILE` and
//! `CODE_LINE`. For stderr, tracing's own text format is written into a
//! [`Record`] instead of to stderr.

use std::fmt;
use std::io;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use super::native;
use super::pump;

/// The prefix of every field of the manager's own.
const PREFIX: &str = "SOCKHERD";

/// Formats events as journal entries.
pub(crate) struct Journal {
    app: String,
}

impl Journal {
    pub(crate) fn new(app: &str) -> Journal {
        Journal {
            app: app.to_owned(),
        }
    }
}

impl<S: Subscriber> Layer<S> for Journal {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        let mut entry = Vec::with_capacity(512);
        let priority: &[u8] = match *meta.level() {
            Level::ERROR => b"3",
            Level::WARN => b"4",
            Level::INFO => b"6",
            Level::DEBUG | Level::TRACE => b"7",
        };
        native::put(&mut entry, "PRIORITY", priority);
        native::put(&mut entry, "SYSLOG_IDENTIFIER", self.app.as_bytes());
        native::put(&mut entry, "SOCKHERD_APP", self.app.as_bytes());
        event.record(&mut Fields { entry: &mut entry });
        native::put(&mut entry, "TARGET", meta.target().as_bytes());
        if let Some(file) = meta.file() {
            native::put(&mut entry, "CODE_FILE", file.as_bytes());
        }
        if let Some(line) = meta.line() {
            native::put(&mut entry, "CODE_LINE", line.to_string().as_bytes());
        }
        pump::event(entry);
    }
}

/// Writes an event's fields into a journal entry.
struct Fields<'a> {
    entry: &'a mut Vec<u8>,
}

impl Fields<'_> {
    fn put(&mut self, field: &Field, value: &[u8]) {
        match field.name() {
            "message" => native::put(self.entry, "MESSAGE", value),
            // SOCKHERD_APP is the app's, once per entry.
            "app" => {}
            name => native::put(self.entry, &native::field_name(PREFIX, name), value),
        }
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.as_bytes());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").as_bytes());
    }
}

/// Where tracing's text format writes, for stderr: each event becomes one
/// [`Record`], queued for the log thread when tracing is done with it.
pub(crate) struct ToLogThread;

impl<'a> MakeWriter<'a> for ToLogThread {
    type Writer = Record;

    fn make_writer(&'a self) -> Record {
        Record(Vec::with_capacity(256))
    }
}

/// One event's text.
pub(crate) struct Record(Vec<u8>);

impl io::Write for Record {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            pump::event(std::mem::take(&mut self.0));
        }
    }
}
