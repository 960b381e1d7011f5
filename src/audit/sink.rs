//! Where audit records go besides the log: a tracing layer that takes every event with target
//! `audit` and hands it to one writer thread, which appends it to the hash-chained file.
//!
//! The request path only formats the record and queues it; file I/O and hashing happen on the
//! writer thread. The queue is bounded: if the disk cannot keep up, requests wait rather than
//! records being dropped (an audit trail with holes is worse than a slower gateway).

use super::chain::{ChainError, ChainWriter};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// Records queued before senders wait.
const QUEUE: usize = 16 * 1024;

/// The tracing layer feeding the audit file.
pub struct AuditFileLayer {
    queue: SyncSender<Map<String, Value>>,
}

impl AuditFileLayer {
    /// Opens the chained file and starts its writer thread.
    pub fn start(path: &Path, max_size: u64, keep: usize) -> Result<Self, ChainError> {
        let writer = ChainWriter::open(path, max_size, keep)?;
        let (queue, records) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(writer, records))
            .map_err(|e| ChainError::Io(path.to_path_buf(), e))?;
        Ok(Self { queue })
    }
}

fn write_loop(mut writer: ChainWriter, records: Receiver<Map<String, Value>>) {
    while let Ok(first) = records.recv() {
        let mut next = Some(first);
        // Write everything queued, then flush once.
        while let Some(record) = next {
            crate::metrics::audit_queue("file", -1);
            if let Err(e) = writer.append(record) {
                eprintln!("portcullis: audit file write failed: {e}");
            }
            next = records.try_recv().ok();
        }
        if let Err(e) = writer.flush() {
            eprintln!("portcullis: audit file flush failed: {e}");
        }
    }
}

/// Collects an event's fields into a JSON object (shared by every sink).
pub(super) struct Fields(pub(super) Map<String, Value>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        // `%value` fields arrive here as Display wrapped in Debug: keep the plain text.
        let text = format!("{value:?}");
        let name = if field.name() == "message" {
            "msg"
        } else {
            field.name()
        };
        self.0.insert(name.into(), Value::from(text));
    }
}

/// An audit event as a record: its time, the schema version, then its fields.
pub(super) fn record_of(event: &Event<'_>) -> Map<String, Value> {
    let mut fields = Fields(Map::new());
    fields.0.insert(
        "time".into(),
        Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    );
    fields
        .0
        .insert("schema".into(), Value::from(super::SCHEMA_VERSION));
    event.record(&mut fields);
    fields.0
}

impl<S: Subscriber> Layer<S> for AuditFileLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let record = record_of(event);
        // A full queue makes this request wait for the disk; a stopped writer drops it.
        crate::metrics::audit_queue("file", 1);
        if self.queue.send(record).is_err() {
            crate::metrics::audit_queue("file", -1);
            crate::metrics::audit_dropped("file", 1);
        }
    }
}
