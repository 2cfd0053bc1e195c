//! Several relays sharing rooms through a real Redis: clients connected to different instances
//! meet in one room, and a room outlives the instance that held it.

use std::time::Duration;

use confer_proto::{ClientMessage, ErrorCode, PeerState, ServerMessage, SignalPayload};

use crate::support::{Client, Seat, TestRedis, TestRelay};

fn candidate(n: u32) -> SignalPayload {
    SignalPayload::Candidate {
        candidate: format!("candidate:{n} 1 udp 1 127.0.0.1 {} typ host", 40_000 + n),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    }
}

async fn shared_relay(redis: &TestRedis) -> TestRelay {
    TestRelay::start(&["--redis-url", &redis.url(), "--grace", "20"]).await
}

/// Sends `count` candidates from `from` to `to` and checks they arrive once, in order, numbered.
async fn signals_flow(from: &mut Seat, to: &mut Seat, count: u32) {
    for n in 1..=count {
        from.client.send(&ClientMessage::Signal { to: to.id.clone(), payload: candidate(n) }).await;
    }
    let mut last_seq = 0;
    for n in 1..=count {
        let (seq, payload) = to
            .client
            .recv_until(|msg| match msg {
                ServerMessage::Signal { from: sender, seq, payload } if sender == from.id => {
                    Some((seq, payload))
                }
                _ => None,
            })
            .await;
        assert!(seq > last_seq, "seq {seq} after {last_seq}: out of order or repeated");
        last_seq = seq;
        assert_eq!(payload, candidate(n), "signal {n} arrives once and in order");
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[tokio::test]
async fn clients_of_two_relays_meet_in_one_room_through_redis() {
    let redis = TestRedis::start();
    let a = shared_relay(&redis).await;
    let b = shared_relay(&redis).await;
    // The room is made on A; its invites work on B too (the relays share their token key).
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    assert_eq!(guest.participants.len(), 1, "the guest on B sees the host on A");
    assert_eq!(guest.participants[0].id, host.id);
    let joined = host
        .client
        .recv_until(|msg| match msg {
            ServerMessage::PeerJoined { peer } => Some(peer.id),
            _ => None,
        })
        .await;
    assert_eq!(joined, guest.id, "the host on A is told of the guest on B");

    // Signals cross the instances both ways, in order and once each.
    signals_flow(&mut host, &mut guest, 50).await;
    signals_flow(&mut guest, &mut host, 50).await;

    // Presence too.
    guest
        .client
        .send(&ClientMessage::Update { name: None, muted: Some(true), camera: None, hand_raised: None })
        .await;
    let muted = host
        .client
        .recv_until(|msg| match msg {
            ServerMessage::PeerUpdated { peer } if peer.id == guest.id => Some(peer.muted),
            _ => None,
        })
        .await;
    assert!(muted, "the guest's mute reaches the host");

    // A third joins through B, the second instance's clients see each other as well.
    let mut third = b.join(&links.guest, "Third").await;
    assert_eq!(third.participants.len(), 2);
    signals_flow(&mut third, &mut guest, 5).await;
    signals_flow(&mut third, &mut host, 5).await;

    guest.client.send(&ClientMessage::Leave).await;
    host.client
        .recv_until(|msg| match msg {
            ServerMessage::PeerLeft { peer, .. } if peer == guest.id => Some(()),
            _ => None,
        })
        .await;

    // Each relay says what crossed and how long Redis took.
    let (ma, mb) = (a.metrics().await, b.metrics().await);
    assert_eq!(metric(&ma, "confer_relay_redis_up"), 1.0);
    assert!(metric(&ma, "confer_relay_cluster_envelopes_sent_total") >= 55.0, "{ma}");
    assert!(metric(&mb, "confer_relay_cluster_envelopes_sent_total") >= 55.0, "{mb}");
    assert!(metric(&mb, "confer_relay_cluster_envelopes_received_total") >= 55.0, "{mb}");
    assert_eq!(metric(&ma, "confer_relay_cluster_gaps_total"), 0.0);
    assert!(metric(&mb, "confer_relay_redis_round_trip_seconds_count") > 0.0);
    assert_eq!(metric(&ma, "confer_relay_rooms"), 1.0, "A holds the room");
    assert_eq!(metric(&mb, "confer_relay_rooms"), 0.0, "B holds none");
}

fn resume(token: &str, last_seq: u64) -> ClientMessage {
    ClientMessage::Resume { token: token.to_owned(), last_seq, name: None, muted: false, camera: false }
}

async fn resumed(client: &mut Client) -> (String, Vec<confer_proto::Participant>) {
    client
        .recv_until(|msg| match msg {
            ServerMessage::Resumed { resume_token, participants, .. } => Some((resume_token, participants)),
            ServerMessage::Error { code, message, .. } => panic!("resume refused: {code}: {message}"),
            _ => None,
        })
        .await
}

#[tokio::test]
async fn when_the_relay_holding_a_room_dies_its_people_resume_on_another() {
    let redis = TestRedis::start();
    let a = shared_relay(&redis).await;
    let b = shared_relay(&redis).await;
    let links = a.create_room(false).await;
    // A holds the room: its first member joined there.
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    host.client.recv().await; // the guest joined
    host.client.send(&ClientMessage::Lock).await;
    guest.client.recv().await; // the room is locked
    // A holder writes its changed rooms' snapshots every second.
    tokio::time::sleep(Duration::from_millis(1_500)).await;

    // A dies without a word (kill -9: no shutdown, no cleanup in Redis).
    let started = std::time::Instant::now();
    let host_token = host.resume_token.clone();
    drop(a);
    // B finds out within the holder's lease and tells the guest to resume.
    guest.client.expect_fatal(ErrorCode::ShuttingDown).await;
    let noticed = started.elapsed();
    assert!(noticed < Duration::from_secs(4), "noticed after {noticed:?}");

    // Both resume on B (the one instance left): B takes the room over from A's last snapshot.
    let mut guest_back = b.connect().await;
    guest_back.send(&resume(&guest.resume_token, 0)).await;
    match guest_back.recv().await {
        ServerMessage::Resumed { locked, gap, participants, .. } => {
            assert!(locked, "the lock survived its holder");
            assert!(gap, "what A sent after its last snapshot may be lost: the guest is told");
            assert_eq!(participants.len(), 1, "the host's seat survived too, reconnecting");
        }
        other => panic!("{other:?}"),
    }
    let mut host_back = b.connect().await;
    host_back.send(&resume(&host_token, 0)).await;
    let (_, participants) = resumed(&mut host_back).await;
    assert!(
        participants.iter().any(|p| p.id == guest.id && p.state == PeerState::Active),
        "the host finds the guest back: {participants:?}"
    );
    let back_in = started.elapsed();

    // And they signal again, through B alone.
    let mut host = Seat { client: host_back, ..host };
    let mut guest = Seat { client: guest_back, ..guest };
    signals_flow(&mut host, &mut guest, 5).await;
    signals_flow(&mut guest, &mut host, 5).await;
    let mb = b.metrics().await;
    assert_eq!(metric(&mb, "confer_relay_cluster_takeovers_total"), 1.0, "{mb}");
    eprintln!("holder killed: guest told after {noticed:?}, both back in after {back_in:?}");
}

/// Polls `/healthz/ready` until it answers `status`; returns the body.
async fn ready_becomes(relay: &TestRelay, status: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let response = relay.http("GET", "/healthz/ready", &[], "").await;
        if response.status == status {
            return response.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness stayed {}: {}",
            response.status,
            response.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_redis_outage_shows_on_health_and_heals_without_restarting_the_relays() {
    let mut redis = TestRedis::start();
    let a = shared_relay(&redis).await;
    let b = shared_relay(&redis).await;
    ready_becomes(&a, 200).await;
    ready_becomes(&b, 200).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    host.client.recv().await; // the guest joined

    redis.stop();
    // Alive, but no new connections please: a load balancer sends them elsewhere.
    let why = ready_becomes(&b, 503).await;
    assert!(why.contains("Redis is unreachable"), "{why}");
    assert_eq!(a.http("GET", "/healthz", &[], "").await.status, 200, "still alive");
    assert_eq!(metric(&b.metrics().await, "confer_relay_redis_up"), 0.0);
    // What the guest says now cannot reach the host's relay: it is told, not left hanging.
    guest.client.send(&ClientMessage::Signal { to: host.id.clone(), payload: candidate(1) }).await;
    guest.client.expect_fatal(ErrorCode::ShuttingDown).await;

    // Redis comes back empty. Both relays recover by themselves; the guest resumes and the two
    // talk again (the host's relay wrote its room back into the directory).
    redis.restart();
    ready_becomes(&a, 200).await;
    ready_becomes(&b, 200).await;
    // The host's relay writes its room back the moment it reaches Redis again.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut guest_back = b.connect().await;
    guest_back.send(&resume(&guest.resume_token, 0)).await;
    resumed(&mut guest_back).await;
    let mut guest = Seat { client: guest_back, ..guest };
    signals_flow(&mut guest, &mut host, 5).await;
    signals_flow(&mut host, &mut guest, 5).await;
}

#[tokio::test]
async fn a_relay_drained_by_sigterm_hands_its_rooms_over_whole() {
    let redis = TestRedis::start();
    let a = shared_relay(&redis).await;
    let b = shared_relay(&redis).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    host.client.recv().await; // the guest joined
    host.client.send(&ClientMessage::Lock).await;
    signals_flow(&mut host, &mut guest, 3).await;

    // A rolling upgrade: A gets SIGTERM while B keeps running.
    let drained = tokio::task::spawn_blocking(move || {
        let mut a = a;
        a.terminate()
    });
    guest.client.expect_fatal(ErrorCode::ShuttingDown).await;
    host.client.expect_fatal(ErrorCode::ShuttingDown).await;
    assert!(drained.await.unwrap(), "A exits cleanly");

    // Both resume on B and find the room as it was: seats, numbering, lock; nothing missing.
    let mut guest_back = b.connect().await;
    guest_back.send(&resume(&guest.resume_token, 3)).await;
    match guest_back.recv().await {
        ServerMessage::Resumed { gap, replayed, locked, participants, .. } => {
            assert!(!gap, "nothing was lost in the handover");
            assert_eq!(replayed, 0, "the guest had read everything");
            assert!(locked, "the lock came along");
            assert_eq!(participants.len(), 1, "the host's seat came along");
        }
        other => panic!("{other:?}"),
    }
    let mut host_back = b.connect().await;
    host_back.send(&resume(&host.resume_token, 0)).await;
    match host_back.recv().await {
        ServerMessage::Resumed { gap, participants, .. } => {
            assert!(!gap);
            assert!(participants.iter().any(|p| p.id == guest.id && p.state == PeerState::Active));
        }
        other => panic!("{other:?}"),
    }
    let mut host = Seat { client: host_back, ..host };
    let mut guest = Seat { client: guest_back, ..guest };
    // The numbering goes on where A left it.
    host.client.send(&ClientMessage::Signal { to: guest.id.clone(), payload: candidate(9) }).await;
    let seq = guest
        .client
        .recv_until(|msg| match msg {
            ServerMessage::Signal { seq, .. } => Some(seq),
            _ => None,
        })
        .await;
    assert_eq!(seq, 4, "seq continues after the handover");
    signals_flow(&mut guest, &mut host, 3).await;
    // A newcomer knocks: the room is still locked.
    let mut newcomer = b.connect().await;
    newcomer.send(&crate::support::join_message(&links.guest, "Late")).await;
    assert!(matches!(newcomer.recv().await, ServerMessage::Knocking { .. }));
}

#[tokio::test]
async fn seats_of_a_relay_that_dies_are_given_up_after_their_grace_by_the_holder() {
    let redis = TestRedis::start();
    let a = TestRelay::start(&["--redis-url", &redis.url(), "--grace", "3"]).await;
    let b = TestRelay::start(&["--redis-url", &redis.url(), "--grace", "3"]).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let guest = b.join(&links.guest, "Guest").await;
    host.client.recv().await; // the guest joined

    // B dies without a word: its client's seat on A must not stay taken forever.
    drop(b);
    let reconnecting = host
        .client
        .recv_until(|msg| match msg {
            ServerMessage::PeerReconnecting { peer } => Some(peer),
            _ => None,
        })
        .await;
    assert_eq!(reconnecting, guest.id, "the holder notices within its liveness check");
    let (left, reason) = host
        .client
        .recv_until(|msg| match msg {
            ServerMessage::PeerLeft { peer, reason } => Some((peer, reason)),
            _ => None,
        })
        .await;
    assert_eq!((left, reason), (guest.id, confer_proto::LeaveReason::Timeout), "and ends it after the grace");
}

#[tokio::test]
async fn the_deployment_example_config_starts_an_instance_that_shares_rooms() {
    let redis = TestRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("relay.crt"), dir.path().join("relay.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    // deploy/relay.toml as shipped; flags override what names this machine's paths and ports.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/relay.toml");
    let (cert, key, url) = (cert.to_str().unwrap(), key.to_str().unwrap(), redis.url());
    let mut relay =
        TestRelay::start(&["--config", example, "--tls-cert", cert, "--tls-key", key, "--redis-url", &url])
            .await;
    assert_eq!(relay.origin, "wss://meet.example.org", "links name the load balancer");
    relay.client_tls = Some(crate::support::trusting(&[certified.cert.der().clone()]));
    ready_becomes(&relay, 200).await;
    assert_eq!(metric(&relay.metrics().await, "confer_relay_redis_up"), 1.0);
}

#[tokio::test]
async fn each_relay_trims_what_it_has_read_off_its_inbox() {
    let redis = TestRedis::start();
    let flags = ["--redis-url", &redis.url(), "--message-rate", "100000", "--message-burst", "100000"];
    let a = TestRelay::start(&flags).await;
    let b = TestRelay::start(&flags).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    signals_flow(&mut host, &mut guest, 1_000).await;
    signals_flow(&mut guest, &mut host, 1_000).await;
    let mut redis_client = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let inboxes: Vec<String> = redis::cmd("KEYS").arg("confer:inbox:*").query(&mut redis_client).unwrap();
    assert_eq!(inboxes.len(), 2, "one inbox per instance: {inboxes:?}");
    // Read inboxes are trimmed about once a second (whole stream nodes of 100 entries at a time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let lengths: Vec<u64> =
            inboxes.iter().map(|key| redis::cmd("XLEN").arg(key).query(&mut redis_client).unwrap()).collect();
        if lengths.iter().all(|&len| len <= 200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "inboxes still hold {lengths:?} of 1,000+ envelopes read"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the room still works.
    signals_flow(&mut host, &mut guest, 5).await;
}

#[tokio::test]
async fn relays_share_rooms_through_a_redis_that_speaks_only_tls_and_trust_only_its_ca() {
    let (redis, ca) = TestRedis::start_tls();
    assert!(redis.url().starts_with("rediss://localhost:"), "{}", redis.url());
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("redis-ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let flags = ["--redis-url", &redis.url(), "--redis-ca", ca_file, "--grace", "20"];
    let a = TestRelay::start(&flags).await;
    let b = TestRelay::start(&flags).await;
    ready_becomes(&a, 200).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = b.join(&links.guest, "Guest").await;
    assert_eq!(guest.participants.len(), 1, "the guest on B sees the host on A, through TLS Redis");
    signals_flow(&mut host, &mut guest, 20).await;
    signals_flow(&mut guest, &mut host, 20).await;

    // Without the CA, Redis's certificate is not trusted: not ready, and it says why.
    let untrusting = TestRelay::start(&["--redis-url", &redis.url()]).await;
    let why = ready_becomes(&untrusting, 503).await;
    assert!(why.contains("Redis"), "{why}");
    assert_eq!(metric(&untrusting.metrics().await, "confer_relay_redis_up"), 0.0);

    // A CA file that is not one is refused at start, by name.
    let bad = dir.path().join("not-a-ca.pem");
    std::fs::write(&bad, "hello").unwrap();
    let state = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_confer-relay"))
        .args(["--listen", "127.0.0.1:0", "--turn", "false", "--redis-url", &redis.url(), "--redis-ca"])
        .arg(&bad)
        .arg("--state-dir")
        .arg(state.path())
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(said.contains("not-a-ca.pem: it holds no PEM certificate"), "{said}");
}

/// After a hand-over the instance taking a room over may be asked for it by several joiners at
/// once: the holder script gives the drained room's snapshot to one of them only, and each must
/// find the room whole (every seat of the snapshot listed, reconnecting), not an empty room
/// opened by a joiner that asked second and got there first.
#[tokio::test]
async fn joiners_arriving_at_once_after_a_hand_over_all_find_the_room_whole() {
    let redis = TestRedis::start();
    let a = shared_relay(&redis).await;
    let b = shared_relay(&redis).await;
    let links = a.create_room(false).await;
    let mut host = a.join(&links.host, "Host").await;
    let mut guest = a.join(&links.guest, "Guest").await;
    host.client.recv().await; // the guest joined
    let drained = tokio::task::spawn_blocking(move || {
        let mut a = a;
        a.terminate()
    });
    guest.client.expect_fatal(ErrorCode::ShuttingDown).await;
    host.client.expect_fatal(ErrorCode::ShuttingDown).await;
    assert!(drained.await.unwrap(), "A exits cleanly");

    // Six newcomers at once on B, which holds nothing of the room yet (8 seats in all).
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(b.connect().await);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(&crate::support::join_message(&links.guest, &format!("New{i}"))).await;
    }
    for (i, client) in clients.into_iter().enumerate() {
        let seat = client.expect_joined().await;
        let listed = |id: &confer_proto::PeerId| seat.participants.iter().any(|p| &p.id == id);
        assert!(
            listed(&host.id) && listed(&guest.id),
            "newcomer {i} was seated without the room's seats: {:?}",
            seat.participants
        );
    }
}
