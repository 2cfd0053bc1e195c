//! Soak of a cluster: three real `confer-relay` instances sharing rooms through one real
//! `redis-server`, 10,000 WebSocket connections in 1,250 rooms of 8 for 10 minutes, every room
//! spread over all three instances (seat s of room r on instance (r + s) mod 3; seat 0 joins first,
//! so instance r mod 3 holds room r). Meanwhile:
//!
//! - signals: every connection sends to a random member of its room, `SOAK_RATE` signals/s in
//!   all, each stamped with its sender's numbering for that receiver, its room and its send time.
//!   Receivers check the room (misrouted), the numbering (lost, repeated) and the relay's own
//!   `seq` (gaps); at the end every signal sent to a receiver still seated is accounted for.
//! - churn: `SOAK_CHURN` connections a second leave and their seat joins again a moment later;
//! - join storms: every `SOAK_STORM_EVERY` seconds, 1,000 seated connections leave, then all
//!   1,000 join again at once (1,000 joins within a second).
//!
//! Printed: RSS of each instance and of Redis over time (flat or not), forwarding latency p50/p99
//! by the number of Redis stream hops a signal took (0: sender and receiver on the room's holder;
//! 1: one of them elsewhere; 2: both elsewhere), join latency in storms, lost/misrouted/repeated.
//!
//! `cargo bench -p confer-relay --bench cluster_soak` (the full run: 10 minutes);
//! `-- --quick`: 1,200 connections for 60 s. `SOAK_CONNS`, `SOAK_SECS`, `SOAK_RATE`,
//! `SOAK_CHURN`, `SOAK_STORM`, `SOAK_STORM_EVERY` change the shape.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout, unreachable_pub)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Redis, Relay, Ws, cpu_seconds, guest_token, quantile, rss_kib};
use confer_proto::{ClientMessage, ErrorCode, PeerId, RoomId, ServerMessage, SignalPayload};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

const SEATS: usize = 8;
const INSTANCES: usize = 3;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What a seat's connection is told.
enum Command {
    /// Leave the room for good (churn).
    Leave,
    /// Stop sending; keep reading (the end of the run).
    Quiet,
    /// The run is over: file what was received and close.
    End,
}

/// How a seat's connection ended.
enum Ended {
    Left,
    Closed,
    Dropped(String),
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    /// Signals whose room tag is not the receiver's.
    misrouted: AtomicU64,
    /// A sender's numbering went backwards or repeated.
    repeated: AtomicU64,
    /// A sender's numbering skipped (counted again, exactly, by the final accounting).
    skipped: AtomicU64,
    /// The relay's own `seq` to a receiver skipped or repeated.
    seq_faults: AtomicU64,
    /// `peer_not_found`: the receiver had just left (churn), not a fault.
    refused: AtomicU64,
    joins: AtomicU64,
    failed_joins: AtomicU64,
    /// Connections the relay ended or that broke (none is expected).
    dropped: AtomicU64,
}

struct Soak {
    relays: Vec<Relay>,
    rooms: Vec<RoomId>,
    tokens: Vec<String>,
    /// Who sits in each seat now (slot = room * SEATS + seat).
    roster: Mutex<Vec<Option<PeerId>>>,
    /// How to reach each seat's connection task.
    controls: Mutex<Vec<Option<mpsc::UnboundedSender<Command>>>>,
    counters: Counters,
    /// Latencies (µs) by Redis hops, 0..=2.
    latencies: [Mutex<Vec<u32>>; 3],
    /// Signals sent, per (sender, receiver), by senders when they stop.
    sent_per_pair: Mutex<HashMap<(PeerId, PeerId), u64>>,
    /// Signals received, per (sender, receiver), by receivers seated at the end.
    received_per_pair: Mutex<HashMap<(PeerId, PeerId), u64>>,
    failures: Mutex<Vec<String>>,
    epoch: Instant,
    /// Seconds between two signals of one connection.
    period: Duration,
}

fn instance_of(slot: usize) -> usize {
    (slot / SEATS + slot % SEATS) % INSTANCES
}

fn holder_of(slot: usize) -> usize {
    (slot / SEATS) % INSTANCES
}

fn tag(room: usize, slot: usize, n: u64, stamp_us: u64) -> SignalPayload {
    SignalPayload::Candidate {
        candidate: format!(
            "candidate:1 1 udp 1 198.51.100.7 9 typ host generation 0 soak {room} {slot} {n} {stamp_us}"
        ),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: None,
    }
}

/// (room, sender slot, n, stamp µs) of a soak signal.
fn untag(payload: &SignalPayload) -> Option<(usize, usize, u64, u64)> {
    let SignalPayload::Candidate { candidate, .. } = payload else { return None };
    let mut fields = candidate.split(" soak ").nth(1)?.split(' ').map(|f| f.parse::<u64>().ok());
    let mut next = || fields.next().flatten();
    Some((usize::try_from(next()?).ok()?, usize::try_from(next()?).ok()?, next()?, next()?))
}

impl Soak {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Seats `slot` on its instance and starts its connection task; returns the join's time.
    async fn seat(self: &Arc<Self>, slot: usize) -> Option<Duration> {
        let room = slot / SEATS;
        let started = Instant::now();
        let joined = self.relays[instance_of(slot)].try_join(&self.rooms[room], &self.tokens[room]).await;
        let took = started.elapsed();
        let (ws, id) = match joined {
            Ok(joined) => joined,
            Err(why) => {
                self.counters.failed_joins.fetch_add(1, Relaxed);
                locked(&self.failures).push(format!("slot {slot}: {why}"));
                return None;
            }
        };
        self.counters.joins.fetch_add(1, Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        locked(&self.roster)[slot] = Some(id.clone());
        locked(&self.controls)[slot] = Some(tx);
        tokio::spawn(Arc::clone(self).serve(slot, id, ws, rx));
        Some(took)
    }

    /// Tells `slot` to leave; returns whether it was seated.
    fn unseat(&self, slot: usize) -> bool {
        locked(&self.roster)[slot] = None;
        locked(&self.controls)[slot].take().is_some_and(|tx| tx.send(Command::Leave).is_ok())
    }

    fn pick_receiver(&self, slot: usize) -> Option<(usize, PeerId)> {
        let room = slot / SEATS;
        let roster = locked(&self.roster);
        let others: Vec<usize> =
            (room * SEATS..room * SEATS + SEATS).filter(|&s| s != slot && roster[s].is_some()).collect();
        let to = *others.get(rand::random_range(..others.len().max(1)))?;
        Some((to, roster[to].clone()?))
    }

    /// One seat's connection: sends on its schedule, checks what it receives.
    async fn serve(
        self: Arc<Self>,
        slot: usize,
        me: PeerId,
        ws: Ws,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        let room = slot / SEATS;
        let (mut sink, mut stream) = ws.split();
        let mut numbers: HashMap<PeerId, u64> = HashMap::new();
        let mut heard: HashMap<PeerId, u64> = HashMap::new();
        let mut last_seq = 0;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + self.period.mul_f64(rand::random::<f64>()),
            self.period,
        );
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sending = true;
        let ended = loop {
            tokio::select! {
                _ = tick.tick(), if sending => {
                    let Some((_, to)) = self.pick_receiver(slot) else { continue };
                    let n = numbers.entry(to.clone()).or_default();
                    *n += 1;
                    let msg = ClientMessage::Signal { to, payload: tag(room, slot, *n, self.now_us()) };
                    if let Err(err) = sink.send(Message::text(serde_json::to_string(&msg).unwrap())).await {
                        break Ended::Dropped(err.to_string());
                    }
                    self.counters.sent.fetch_add(1, Relaxed);
                }
                command = commands.recv() => match command {
                    Some(Command::Quiet) => sending = false,
                    Some(Command::Leave) => {
                        let leave = serde_json::to_string(&ClientMessage::Leave).unwrap();
                        let _ = sink.send(Message::text(leave)).await;
                        let _ = sink.close().await;
                        break Ended::Left;
                    }
                    Some(Command::End) | None => break Ended::Closed,
                },
                frame = stream.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        Some(Err(err)) => break Ended::Dropped(err.to_string()),
                        None => break Ended::Dropped("closed by the relay".into()),
                    };
                    let Message::Text(text) = frame else { continue };
                    match confer_proto::decode_server(&text) {
                        Ok(ServerMessage::Signal { from, seq, payload }) => {
                            self.check(slot, &mut last_seq, seq, &mut heard, from, &payload);
                        }
                        Ok(ServerMessage::Error { code: ErrorCode::PeerNotFound, .. }) => {
                            self.counters.refused.fetch_add(1, Relaxed);
                        }
                        Ok(ServerMessage::Error { code, message, .. }) => {
                            locked(&self.failures).push(format!("slot {slot}: error {code}: {message}"));
                        }
                        _ => {}
                    }
                }
            }
        };
        let mut sent = locked(&self.sent_per_pair);
        for (to, n) in numbers {
            sent.insert((me.clone(), to), n);
        }
        drop(sent);
        if let Ended::Dropped(why) = &ended {
            locked(&self.failures).push(format!("slot {slot}: connection dropped: {why}"));
            self.counters.dropped.fetch_add(1, Relaxed);
        }
        if !matches!(ended, Ended::Left) {
            // Seated to the end, or dropped while seated (what it missed then counts as lost).
            let mut received = locked(&self.received_per_pair);
            for (from, n) in heard {
                received.insert((from, me.clone()), n);
            }
        }
    }

    fn check(
        &self,
        slot: usize,
        last_seq: &mut u64,
        seq: u64,
        heard: &mut HashMap<PeerId, u64>,
        from: PeerId,
        payload: &SignalPayload,
    ) {
        let now = self.now_us();
        self.counters.received.fetch_add(1, Relaxed);
        if *last_seq != 0 && seq != *last_seq + 1 {
            self.counters.seq_faults.fetch_add(1, Relaxed);
        }
        *last_seq = seq;
        let Some((room, sender, n, stamp)) = untag(payload) else {
            self.counters.misrouted.fetch_add(1, Relaxed);
            return;
        };
        if room != slot / SEATS {
            self.counters.misrouted.fetch_add(1, Relaxed);
            return;
        }
        let last = heard.entry(from).or_default();
        if n <= *last {
            self.counters.repeated.fetch_add(1, Relaxed);
        } else {
            if n > *last + 1 {
                self.counters.skipped.fetch_add(n - *last - 1, Relaxed);
            }
            *last = n;
        }
        let hops = usize::from(instance_of(sender) != holder_of(slot))
            + usize::from(instance_of(slot) != holder_of(slot));
        locked(&self.latencies[hops]).push(u32::try_from(now.saturating_sub(stamp)).unwrap_or(u32::MAX));
    }
}

fn locked<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Seated slots, shuffled.
fn seated(soak: &Soak) -> Vec<usize> {
    let roster = locked(&soak.roster);
    let mut slots: Vec<usize> = (0..roster.len()).filter(|&s| roster[s].is_some()).collect();
    rand::seq::SliceRandom::shuffle(slots.as_mut_slice(), &mut rand::rng());
    slots
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let quick = std::env::args().any(|a| a == "--quick");
    let conns =
        usize::try_from(env_or("SOAK_CONNS", if quick { 1_200 } else { 10_000 })).unwrap() / SEATS * SEATS;
    let secs = env_or("SOAK_SECS", if quick { 60 } else { 600 });
    let rate = env_or("SOAK_RATE", 2_000);
    let churn = env_or("SOAK_CHURN", if quick { 10 } else { 50 });
    let storm = usize::try_from(env_or("SOAK_STORM", if quick { 200 } else { 1_000 })).unwrap();
    let storm_every = env_or("SOAK_STORM_EVERY", if quick { 20 } else { 60 });
    let rooms_count = conns / SEATS;
    println!(
        "soak: {conns} connections in {rooms_count} rooms of {SEATS} over {INSTANCES} relays and one Redis, {secs} s, \
         {rate} signals/s, {churn} leave+join/s, storms of {storm} every {storm_every} s"
    );

    let redis = Redis::start();
    let flags = ["--room-capacity", "8", "--grace", "30"];
    let relays: Vec<Relay> = (0..INSTANCES).map(|_| Relay::start_with(Some(&redis), &flags)).collect();
    let rooms: Vec<RoomId> = (0..rooms_count).map(|_| confer_relay::token::new_room_id()).collect();
    let tokens = rooms.iter().map(guest_token).collect();
    let soak = Arc::new(Soak {
        relays,
        rooms,
        tokens,
        roster: Mutex::new(vec![None; conns]),
        controls: Mutex::new(vec![None; conns]),
        counters: Counters::default(),
        latencies: Default::default(),
        sent_per_pair: Mutex::default(),
        received_per_pair: Mutex::default(),
        failures: Mutex::default(),
        epoch: Instant::now(),
        period: Duration::from_secs_f64(conns as f64 / rate as f64),
    });
    let pids: Vec<u32> = soak.relays.iter().map(Relay::pid).chain([redis.pid()]).collect();
    let rss = || pids.iter().map(|&pid| rss_kib(pid)).collect::<Vec<_>>();
    let idle = rss();

    // Fill at 1,000 joins a second: every room's seat 0 first (its instance holds the room).
    let fill = Instant::now();
    let order: Vec<usize> =
        (0..conns).filter(|s| s % SEATS == 0).chain((0..conns).filter(|s| s % SEATS != 0)).collect();
    let mut pacing = tokio::time::interval(Duration::from_millis(1));
    let mut joining = Vec::new();
    for (i, slot) in order.into_iter().enumerate() {
        if i == rooms_count {
            // Seat 0s seated before anyone else comes.
            for join in joining.drain(..) {
                let _ = join.await;
            }
        }
        pacing.tick().await;
        let soak = Arc::clone(&soak);
        joining.push(tokio::spawn(async move { soak.seat(slot).await }));
    }
    let mut fill_times = Vec::new();
    for join in joining {
        if let Ok(Some(took)) = join.await {
            fill_times.push(u64::try_from(took.as_micros()).unwrap());
        }
    }
    fill_times.sort_unstable();
    println!(
        "filled in {:.1} s: joins p50 {} µs, p99 {} µs, {} failed",
        fill.elapsed().as_secs_f64(),
        quantile(&fill_times, 0.5),
        quantile(&fill_times, 0.99),
        soak.counters.failed_joins.load(Relaxed)
    );
    let full = rss();

    // Churn and storms in the background.
    let churner = {
        let soak = Arc::clone(&soak);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let per_tick = usize::try_from(churn).unwrap().div_ceil(10);
            loop {
                tick.tick().await;
                for slot in seated(&soak).into_iter().take(per_tick) {
                    if soak.unseat(slot) {
                        let soak = Arc::clone(&soak);
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(rand::random_range(200..1_000))).await;
                            soak.seat(slot).await;
                        });
                    }
                }
            }
        })
    };
    let mut storm_times: Vec<u64> = Vec::new();
    let mut storm_walls = Vec::new();
    let samples_every = Duration::from_secs((secs / 20).max(5));
    println!();
    println!(
        "| t (s) | RSS relay 1 / 2 / 3 (MiB) | RSS Redis (MiB) | signals received | joins | failed joins |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    let mib = |kib: u64| kib as f64 / 1024.0;
    let row = |t: u64, rss: &[u64], soak: &Soak| {
        println!(
            "| {t} | {:.1} / {:.1} / {:.1} | {:.1} | {} | {} | {} |",
            mib(rss[0]),
            mib(rss[1]),
            mib(rss[2]),
            mib(rss[3]),
            soak.counters.received.load(Relaxed),
            soak.counters.joins.load(Relaxed),
            soak.counters.failed_joins.load(Relaxed),
        );
    };
    row(0, &full, &soak);
    let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let received_before = soak.counters.received.load(Relaxed);
    let run = Instant::now();
    let mut next_sample = samples_every;
    let mut next_storm = Duration::from_secs(storm_every);
    let mut samples = vec![full.clone()];
    while run.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if run.elapsed() >= next_storm {
            next_storm += Duration::from_secs(storm_every);
            let slots: Vec<usize> = seated(&soak).into_iter().take(storm).collect();
            for &slot in &slots {
                soak.unseat(slot);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let wall = Instant::now();
            let joins: Vec<_> = slots
                .into_iter()
                .map(|slot| {
                    let soak = Arc::clone(&soak);
                    tokio::spawn(async move { soak.seat(slot).await })
                })
                .collect();
            for join in joins {
                if let Ok(Some(took)) = join.await {
                    storm_times.push(u64::try_from(took.as_micros()).unwrap());
                }
            }
            storm_walls.push(wall.elapsed());
        }
        if run.elapsed() >= next_sample {
            next_sample += samples_every;
            let now = rss();
            row(run.elapsed().as_secs(), &now, &soak);
            samples.push(now);
        }
    }
    let elapsed = run.elapsed().as_secs_f64();
    let forwarded = (soak.counters.received.load(Relaxed) - received_before) as f64 / elapsed;
    let cpu: Vec<f64> =
        pids.iter().zip(&cpu_before).map(|(&pid, before)| (cpu_seconds(pid) - before) / elapsed).collect();
    churner.abort();
    tokio::time::sleep(Duration::from_secs(2)).await; // the last churned seats come back

    // The end: everyone stops sending, what is in flight arrives, then the books are closed.
    for control in locked(&soak.controls).iter().flatten() {
        let _ = control.send(Command::Quiet);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seated_at_end: std::collections::HashSet<PeerId> =
        locked(&soak.roster).iter().flatten().cloned().collect();
    for control in locked(&soak.controls).iter_mut() {
        if let Some(control) = control.take() {
            let _ = control.send(Command::End); // the task files what it received and ends
        }
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = std::mem::take(&mut *locked(&soak.sent_per_pair));
    let received = std::mem::take(&mut *locked(&soak.received_per_pair));
    let mut lost = 0;
    let mut accounted = 0;
    for ((from, to), n) in &sent {
        if seated_at_end.contains(to) {
            accounted += n;
            lost += n.saturating_sub(received.get(&(from.clone(), to.clone())).copied().unwrap_or(0));
        }
    }

    storm_times.sort_unstable();
    println!();
    let c = &soak.counters;
    println!(
        "signals: {} sent, {} received; of {accounted} sent to receivers seated at the end, {lost} lost; \
         {} misrouted, {} repeated, {} skipped numbers, {} relay seq faults; {} refused (receiver had left)",
        c.sent.load(Relaxed),
        c.received.load(Relaxed),
        c.misrouted.load(Relaxed),
        c.repeated.load(Relaxed),
        c.skipped.load(Relaxed),
        c.seq_faults.load(Relaxed),
        c.refused.load(Relaxed),
    );
    println!("forwarded {forwarded:.0} signals/s over the run");
    println!(
        "CPU over the run (share of a core): relays {:.0} % / {:.0} % / {:.0} %, Redis {:.0} % ({:.2} % per 1,000 signals/s)",
        cpu[0] * 100.0,
        cpu[1] * 100.0,
        cpu[2] * 100.0,
        cpu[3] * 100.0,
        cpu[3] * 100.0 / (forwarded / 1_000.0)
    );
    println!();
    println!("| Redis hops | signals | latency p50 | p99 |");
    println!("| --- | ---: | ---: | ---: |");
    for (hops, what) in ["0 (both on the holder)", "1", "2 (both elsewhere)"].iter().enumerate() {
        let mut lat = std::mem::take(&mut *locked(&soak.latencies[hops]));
        lat.sort_unstable();
        let lat: Vec<u64> = lat.into_iter().map(u64::from).collect();
        println!("| {what} | {} | {} µs | {} µs |", lat.len(), quantile(&lat, 0.5), quantile(&lat, 0.99));
    }
    println!();
    println!(
        "join storms: {} of {storm}, all seated within {:?} (longest), joins p50 {} µs, p99 {} µs",
        storm_walls.len(),
        storm_walls.iter().max().copied().unwrap_or_default(),
        quantile(&storm_times, 0.5),
        quantile(&storm_times, 0.99)
    );
    println!(
        "joins {} in all, {} failed; {} connections dropped{}",
        c.joins.load(Relaxed),
        c.failed_joins.load(Relaxed),
        c.dropped.load(Relaxed),
        locked(&soak.failures).iter().take(5).map(|f| format!("; {f}")).collect::<String>()
    );
    let last = samples.last().unwrap();
    println!(
        "RSS (MiB) idle -> full -> end: {}",
        (0..4)
            .map(|i| format!(
                "{} {:.1} -> {:.1} -> {:.1}",
                if i < 3 { format!("relay {}", i + 1) } else { "Redis".into() },
                mib(idle[i]),
                mib(full[i]),
                mib(last[i])
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
