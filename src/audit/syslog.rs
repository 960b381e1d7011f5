//! Audit records to a SIEM: RFC 5424 syslog messages over TCP (RFC 6587) or TLS (RFC 5425),
//! octet-counted.
//!
//! Off the request path: the tracing layer formats the record and hands it to a bounded
//! queue without waiting; one writer thread sends. While the receiver is away the queue
//! buffers (the writer reconnects with backoff and resends the record it was holding); when
//! the queue is full new records are dropped, counted in `portcullis_audit_dropped_total`
//! and reported in a log line once delivery resumes. Before each write the writer checks
//! that the receiver has not closed the connection, so a restarted receiver loses nothing
//! it had not already read.

use super::ocsf;
use super::sink::record_of;
use crate::config::audit::{RecordFormat, SyslogSettings};
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use serde_json::{Map, Value};
use std::io::{ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

/// The metrics and log name of this sink.
const SINK: &str = "syslog";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The syslog sink could not be set up.
#[derive(Debug, Error)]
pub enum SyslogError {
    /// The TLS context could not be built.
    #[error("audit syslog TLS: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    /// The writer thread could not start.
    #[error("audit syslog writer thread: {0}")]
    Thread(std::io::Error),
}

/// One record waiting to be sent, with what its message header needs.
struct Queued {
    record: Map<String, Value>,
    severity: u8,
}

/// The tracing layer feeding the syslog writer.
pub struct SyslogLayer {
    queue: SyncSender<Queued>,
    dropped: Arc<AtomicU64>,
}

impl SyslogLayer {
    /// Starts the writer thread (it connects on its own, and keeps trying).
    pub fn start(settings: &SyslogSettings) -> Result<Self, SyslogError> {
        let tls = settings
            .tls
            .as_ref()
            .map(|t| -> Result<_, SyslogError> {
                let mut builder = SslConnector::builder(SslMethod::tls_client())?;
                builder.set_verify(SslVerifyMode::PEER);
                if let Some(pem) = &t.ca_pem {
                    for cert in openssl::x509::X509::stack_from_pem(pem)? {
                        builder.cert_store_mut().add_cert(cert)?;
                    }
                }
                Ok((builder.build(), t.server_name.clone()))
            })
            .transpose()?;
        let (queue, records) = sync_channel(settings.queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            settings: settings.clone(),
            tls,
            hostname: hostname(),
            dropped: dropped.clone(),
            connection: None,
        };
        std::thread::Builder::new()
            .name("audit-syslog".into())
            .spawn(move || writer.run(records))
            .map_err(SyslogError::Thread)?;
        Ok(Self { queue, dropped })
    }
}

impl<S: Subscriber> Layer<S> for SyslogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "audit" {
            return;
        }
        let severity = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            _ => 6,
        };
        let queued = Queued {
            record: record_of(event),
            severity,
        };
        match self.queue.try_send(queued) {
            Ok(()) => crate::metrics::audit_queue(SINK, 1),
            // Never make a request wait for a SIEM: count it, and say so when delivery resumes.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                crate::metrics::audit_dropped(SINK, 1);
            }
        }
    }
}

enum Connection {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Connection {
    fn tcp(&self) -> &TcpStream {
        match self {
            Connection::Plain(s) => s,
            Connection::Tls(s) => s.get_ref(),
        }
    }

    /// Has the receiver closed its side? (A syslog receiver sends no data of its own: end of
    /// stream or an error means it is gone; for TLS, session tickets and the like are read
    /// and set aside.)
    fn closed_by_peer(&mut self) -> bool {
        if self.tcp().set_nonblocking(true).is_err() {
            return true;
        }
        let mut probe = [0u8; 256];
        let closed = match self {
            Connection::Plain(s) => match s.peek(&mut probe) {
                Ok(n) => n == 0,
                Err(e) => e.kind() != ErrorKind::WouldBlock,
            },
            Connection::Tls(s) => match s.ssl_read(&mut probe) {
                Ok(n) => n == 0,
                Err(e) => e.code() != openssl::ssl::ErrorCode::WANT_READ,
            },
        };
        let _ = self.tcp().set_nonblocking(false);
        closed
    }

    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        match self {
            Connection::Plain(s) => {
                s.write_all(frame)?;
                s.flush()
            }
            Connection::Tls(s) => {
                s.write_all(frame)?;
                s.flush()
            }
        }
    }
}

struct Writer {
    settings: SyslogSettings,
    tls: Option<(SslConnector, String)>,
    hostname: String,
    dropped: Arc<AtomicU64>,
    connection: Option<Connection>,
}

impl Writer {
    fn run(mut self, records: Receiver<Queued>) {
        let mut backoff = FIRST_BACKOFF;
        while let Ok(queued) = records.recv() {
            crate::metrics::audit_queue(SINK, -1);
            let frame = frame(&self.settings, &self.hostname, &queued);
            // Hold this record until it is sent; the queue fills behind it meanwhile.
            loop {
                match self.deliver(&frame) {
                    Ok(()) => {
                        backoff = FIRST_BACKOFF;
                        self.report_drops();
                        break;
                    }
                    Err(e) => {
                        self.connection = None;
                        tracing::warn!(receiver = %self.settings.address, error = %e, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "audit syslog delivery failed; records are buffered");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, frame: &[u8]) -> std::io::Result<()> {
        if self
            .connection
            .as_mut()
            .is_some_and(Connection::closed_by_peer)
        {
            self.connection = None;
        }
        if self.connection.is_none() {
            self.connection = Some(self.connect()?);
            tracing::info!(receiver = %self.settings.address, tls = self.tls.is_some(), "audit syslog connected");
        }
        match &mut self.connection {
            Some(c) => c.send(frame),
            None => Err(std::io::Error::other("not connected")),
        }
    }

    fn connect(&self) -> std::io::Result<Connection> {
        let mut last = std::io::Error::other("address resolves to nothing");
        for addr in self.settings.address.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(tcp) => {
                    tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
                    tcp.set_read_timeout(Some(WRITE_TIMEOUT))?;
                    let _ = tcp.set_nodelay(true);
                    return match &self.tls {
                        None => Ok(Connection::Plain(tcp)),
                        Some((connector, name)) => connector
                            .connect(name, tcp)
                            .map(|s| Connection::Tls(Box::new(s)))
                            .map_err(|e| std::io::Error::other(format!("TLS handshake: {e}"))),
                    };
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn report_drops(&self) {
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(receiver = %self.settings.address, dropped, "audit syslog queue was full: audit records dropped");
        }
    }
}

/// The octet-counted RFC 5424 message for one record.
fn frame(settings: &SyslogSettings, hostname: &str, queued: &Queued) -> Vec<u8> {
    let record = &queued.record;
    let text = |key: &str| record.get(key).and_then(Value::as_str);
    let pri = u16::from(settings.facility) * 8 + u16::from(queued.severity);
    let msgid: String = text("event")
        .unwrap_or("-")
        .chars()
        .filter(char::is_ascii_graphic)
        .take(32)
        .collect();
    let body = match settings.format {
        RecordFormat::Json => Value::Object(record.clone()),
        RecordFormat::Ocsf => ocsf::event(record),
    };
    let message = format!(
        "<{pri}>1 {} {hostname} {} {} {} - {body}",
        text("time").unwrap_or("-"),
        settings.app_name,
        std::process::id(),
        if msgid.is_empty() { "-" } else { &msgid },
    );
    format!("{} {message}", message.len()).into_bytes()
}

/// This machine's name for the HOSTNAME field (`-` when it cannot be read).
fn hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(char::is_ascii_graphic)
        .take(255)
        .collect();
    if name.is_empty() {
        "-".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_octet_counted_rfc5424() {
        let settings = SyslogSettings {
            address: "127.0.0.1:1".into(),
            tls: None,
            facility: 4,
            app_name: "portcullis".into(),
            format: RecordFormat::Json,
            queue: 100,
        };
        let mut record = Map::new();
        record.insert("time".into(), "2026-12-02T10:00:00.000001Z".into());
        record.insert("event".into(), "login_failure".into());
        record.insert("reason".into(), "état inconnu".into());
        let frame = frame(
            &settings,
            "gw1",
            &Queued {
                record,
                severity: 4,
            },
        );
        let text = String::from_utf8(frame).unwrap();
        let (len, message) = text.split_once(' ').unwrap();
        assert_eq!(
            len.parse::<usize>().unwrap(),
            message.len(),
            "length in octets"
        );
        assert!(
            message.starts_with("<36>1 2026-12-02T10:00:00.000001Z gw1 portcullis "),
            "{message}"
        );
        assert!(message.contains(" login_failure - {"), "{message}");
    }
}
