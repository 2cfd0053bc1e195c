//! What sharing rooms through Redis costs a signal, and what a cluster carries: the real
//! `confer-relay` binaries and a real `redis-server`, plain WebSocket on loopback, pairs of clients
//! in rooms of their own, measured side by side in one run:
//!
//! - one relay alone (no Redis): the baseline;
//! - one relay with `--redis-url`, both clients on it: what a room held where its clients are
//!   pays (nothing should cross Redis);
//! - two, then three relays sharing Redis, the two clients of each pair on two different
//!   instances (pair k on instances k and k+1): every signal crosses Redis, one stream hop when
//!   its sender sits on the room's holder, two when it sits on the other.
//!
//! For each: end-to-end latency at a fixed rate (open loop, p50/p99), signals per second at
//! saturation (closed loop), and the CPU Redis and the relays spent per 1,000 of those signals.
//! `cargo bench -p confer-relay --bench cluster` (`-- --quick`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use common::{Redis, Relay, Ws, cpu_seconds, guest_token, metric, quantile, signal_text, stamp_of};
use confer_proto::PeerId;
use confer_relay::token::new_room_id;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

type Pair = ((Ws, PeerId), (Ws, PeerId));

/// `pairs` rooms of two; pair k's first member on relay k, its second on relay k+1 (mod the count).
async fn pairs(relays: &[Relay], pairs: usize) -> Vec<Pair> {
    let mut out = Vec::new();
    for k in 0..pairs {
        let room = new_room_id();
        let token = guest_token(&room);
        let (mut a, mut b) = (
            relays[k % relays.len()].join(&room, &token).await,
            relays[(k + 1) % relays.len()].join(&room, &token).await,
        );
        // The first member hears of the second; neither has more to read.
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), a.0.next()).await {}
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(5), b.0.next()).await {}
        out.push((a, b));
    }
    out
}

/// Open loop: the first of each pair sends to the second at `rate` signals per second in all;
/// returns the end-to-end latencies (µs) of those received in `measure`.
async fn latencies(pairs: Vec<Pair>, rate: f64, measure: Duration) -> Vec<u64> {
    let epoch = Instant::now();
    let per_pair = Duration::from_secs_f64(pairs.len() as f64 / rate);
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for ((a, _), (b, id_b)) in pairs {
        senders.push(tokio::spawn(async move {
            let mut a = a;
            let mut tick = tokio::time::interval(per_pair);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let end = Instant::now() + measure;
            while Instant::now() < end {
                tick.tick().await;
                let stamp = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
                a.send(Message::text(signal_text(&id_b, stamp))).await.unwrap();
            }
            a
        }));
        receivers.push(tokio::spawn(async move {
            let mut b = b;
            let mut seen = Vec::new();
            let end = Instant::now() + measure + Duration::from_secs(1);
            while let Ok(Some(Ok(Message::Text(text)))) = tokio::time::timeout_at(end.into(), b.next()).await
            {
                if let Some(stamp) = stamp_of(&text) {
                    let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap();
                    seen.push(now.saturating_sub(stamp) / 1000);
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for r in receivers {
        all.extend(r.await.unwrap());
    }
    for s in senders {
        drop(s.await);
    }
    all.sort_unstable();
    all
}

/// Closed loop: both of each pair keep `window` signals in flight to the other. Returns the
/// signals received per second over `measure`, and the CPU seconds each of `pids` spent meanwhile.
async fn saturate(pairs: Vec<Pair>, window: usize, measure: Duration, pids: &[u32]) -> (f64, Vec<f64>) {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for ((a, id_a), (b, id_b)) in pairs {
        for (ws, to) in [(a, id_b), (b, id_a)] {
            let (received, stop) = (Arc::clone(&received), Arc::clone(&stop));
            let text = signal_text(&to, 1);
            tasks.push(tokio::spawn(async move {
                let (mut sink, mut stream) = ws.split();
                for _ in 0..window {
                    sink.feed(Message::text(text.clone())).await.unwrap();
                }
                sink.flush().await.unwrap();
                while let Some(Ok(msg)) = stream.next().await {
                    if !matches!(msg, Message::Text(_)) {
                        continue;
                    }
                    received.fetch_add(1, Relaxed);
                    if stop.load(Relaxed) || sink.send(Message::text(text.clone())).await.is_err() {
                        break;
                    }
                }
            }));
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = received.load(Relaxed);
    let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    tokio::time::sleep(measure).await;
    let rate = (received.load(Relaxed) - before) as f64 / measure.as_secs_f64();
    let cpu = pids.iter().zip(cpu_before).map(|(&pid, before)| cpu_seconds(pid) - before).collect();
    stop.store(true, Relaxed);
    for task in tasks {
        task.abort();
    }
    (rate, cpu)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let measure = if quick { Duration::from_secs(2) } else { Duration::from_secs(5) };
    let rate = 1_000.0;
    println!("signals between pairs of clients, plain ws on loopback, {} s per figure", measure.as_secs());
    println!();
    println!(
        "| rooms held | latency at {rate} signals/s, p50 / p99 | signals/s at saturation (20 pairs) | Redis CPU per 1,000 signals/s | relays' CPU per 1,000 signals/s |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    let redis = Redis::start();
    let mut notes = Vec::new();
    for (setup, count, shared) in [
        ("one relay, no Redis", 1, false),
        ("one relay with --redis-url", 1, true),
        ("two relays, the two of a pair on different ones", 2, true),
        ("three relays, the two of a pair on different ones", 3, true),
    ] {
        let relays: Vec<Relay> = (0..count).map(|_| Relay::start(shared.then_some(&redis))).collect();
        let lat = latencies(Box::pin(pairs(&relays, 10)).await, rate, measure).await;
        let mut pids = vec![redis.pid()];
        pids.extend(relays.iter().map(Relay::pid));
        let (throughput, cpu) = saturate(Box::pin(pairs(&relays, 20)).await, 16, measure, &pids).await;
        // CPU seconds per second of the run, per 1,000 signals/s: the share of a core.
        let per_thousand = |seconds: f64| seconds / measure.as_secs_f64() / (throughput / 1_000.0) * 100.0;
        let redis_share =
            if shared { format!("{:.2} % of a core", per_thousand(cpu[0])) } else { "-".into() };
        println!(
            "| {setup} | {} µs / {} µs | {throughput:.0} | {redis_share} | {:.2} % of a core |",
            quantile(&lat, 0.5),
            quantile(&lat, 0.99),
            per_thousand(cpu[1..].iter().sum()),
        );
        if count > 1 {
            let m = relays[1].metrics().await;
            let (sum, n) = (
                metric(&m, "confer_relay_redis_round_trip_seconds_sum"),
                metric(&m, "confer_relay_redis_round_trip_seconds_count"),
            );
            notes.push(format!(
                "{setup}: Redis round trips seen by the second relay {n:.0}, mean {:.0} µs; envelopes sent {:.0}, lost {:.0}, gaps {:.0}",
                sum / n * 1e6,
                metric(&m, "confer_relay_cluster_envelopes_sent_total"),
                metric(&m, "confer_relay_cluster_envelopes_lost_total"),
                metric(&m, "confer_relay_cluster_gaps_total"),
            ));
        }
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}
