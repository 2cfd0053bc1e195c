//! Counters the relay keeps, and their Prometheus text exposition. Plain atomics: recording is
//! a relaxed add on the hot path, and nothing here allocates after start-up.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use confer_proto::ErrorCode;

/// Upper bounds of the forwarding latency histogram, in seconds.
const LATENCY_BOUNDS: [f64; 12] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

/// The relay's counters.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_received: AtomicU64,
    pub(crate) signals_relayed: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) http_rooms_created: AtomicU64,
    rejections: [AtomicU64; 32],
    latency_buckets: [AtomicU64; LATENCY_BOUNDS.len() + 1],
    latency_sum_ns: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections_open: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            messages_received: AtomicU64::new(0),
            signals_relayed: AtomicU64::new(0),
            frames_sent: AtomicU64::new(0),
            http_rooms_created: AtomicU64::new(0),
            rejections: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            latency_sum_ns: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub(crate) fn reject(&self, code: ErrorCode) {
        if let Some(counter) =
            ErrorCode::ALL.iter().position(|&c| c == code).and_then(|i| self.rejections.get(i))
        {
            counter.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn forwarded(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let bucket = LATENCY_BOUNDS.iter().position(|&b| secs <= b).unwrap_or(LATENCY_BOUNDS.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_sum_ns.fetch_add(nanos, Relaxed);
    }

    /// The Prometheus text format, with the gauges read off the room registry.
    pub(crate) fn render(&self, rooms: usize, participants: usize) -> String {
        let mut out = String::with_capacity(4096);
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric(
            "confer_relay_connections",
            "gauge",
            "Open WebSocket connections.",
            self.connections_open.load(Relaxed),
        );
        metric(
            "confer_relay_connections_total",
            "counter",
            "WebSocket connections accepted.",
            self.connections_total.load(Relaxed),
        );
        metric("confer_relay_rooms", "gauge", "Rooms held in memory.", rooms as u64);
        metric(
            "confer_relay_participants",
            "gauge",
            "Seated participants, connected or reconnecting.",
            participants as u64,
        );
        metric(
            "confer_relay_messages_received_total",
            "counter",
            "Messages received from clients.",
            self.messages_received.load(Relaxed),
        );
        metric(
            "confer_relay_signals_relayed_total",
            "counter",
            "Signals forwarded to another participant.",
            self.signals_relayed.load(Relaxed),
        );
        metric(
            "confer_relay_frames_sent_total",
            "counter",
            "Messages written to clients.",
            self.frames_sent.load(Relaxed),
        );
        metric(
            "confer_relay_rooms_created_total",
            "counter",
            "Rooms created over HTTP.",
            self.http_rooms_created.load(Relaxed),
        );

        let _ = writeln!(
            out,
            "# HELP confer_relay_rejections_total Messages or connections refused, by error code."
        );
        let _ = writeln!(out, "# TYPE confer_relay_rejections_total counter");
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let n = self.rejections.get(i).map_or(0, |c| c.load(Relaxed));
            let _ = writeln!(out, "confer_relay_rejections_total{{reason=\"{code}\"}} {n}");
        }

        let name = "confer_relay_forward_latency_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From reading a signal off the sender's socket to writing it to the receiver's."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency_buckets[LATENCY_BOUNDS.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
        let sum = self.latency_sum_ns.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_has_a_counter() {
        let m = Metrics::default();
        assert!(ErrorCode::ALL.len() <= m.rejections.len());
    }

    #[test]
    fn exposition_has_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.reject(ErrorCode::RateLimited);
        m.reject(ErrorCode::RateLimited);
        m.forwarded(Duration::from_micros(30));
        m.forwarded(Duration::from_micros(700));
        m.forwarded(Duration::from_secs(2));
        let text = m.render(3, 5);
        assert!(text.contains("confer_relay_rooms 3\n"));
        assert!(text.contains("confer_relay_participants 5\n"));
        assert!(text.contains("confer_relay_rejections_total{reason=\"rate_limited\"} 2\n"));
        assert!(text.contains("confer_relay_forward_latency_seconds_bucket{le=\"0.00005\"} 1\n"));
        assert!(text.contains("confer_relay_forward_latency_seconds_bucket{le=\"0.001\"} 2\n"));
        assert!(text.contains("confer_relay_forward_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("confer_relay_forward_latency_seconds_count 3\n"));
    }
}
