//! The signaling client against the real `confer-relay` binary over WSS with the self-signed
//! certificate pinned as invite links say: members see each other and exchange signals; a
//! relay restart in the middle is survived (reconnect, resume, signals flow again); and each
//! kind of failure comes back as its own error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::time::Duration;

use confer_mesh::rooms::{self, RoomError};
use confer_mesh::signaling::{self, Admission, JoinError, JoinOptions, SignalingEvent};
use confer_proto::{ErrorCode, Fingerprint, InviteLink, SignalPayload};
use confer_tests::Relay;
use tokio::sync::mpsc::Receiver;

const PATIENCE: Duration = Duration::from_secs(15);

/// Creates a room the way "New meeting" does; returns the host and guest links.
async fn create_room(relay: &Relay) -> (InviteLink, InviteLink) {
    let room = rooms::create_room(&relay.url(), Some(pin(relay)), None, false).await.unwrap();
    (room.host, room.guest)
}

fn pin(relay: &Relay) -> Fingerprint {
    Fingerprint::parse(&relay.fingerprint).unwrap()
}

async fn next_matching(
    events: &mut Receiver<SignalingEvent>,
    what: &str,
    mut want: impl FnMut(&SignalingEvent) -> bool,
) -> SignalingEvent {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(_)) => {}
            Ok(None) => panic!("signaling ended while waiting for {what}"),
            Err(_) => panic!("no {what} within {PATIENCE:?}"),
        }
    }
}

fn offer(text: &str) -> SignalPayload {
    SignalPayload::Offer { sdp: format!("v=0\r\ns={text}\r\n") }
}

#[tokio::test]
async fn members_see_each_other_and_exchange_signals_over_pinned_wss() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, guest_link) = create_room(&relay).await;
    assert!(host_link.fingerprint.is_some(), "the link pins the relay");

    let (host, admission, mut host_events) =
        signaling::join(&host_link, JoinOptions::new("Host")).await.unwrap();
    let Admission::Joined(host_session) = admission else { panic!("the host knocked") };
    assert!(host_session.participants.is_empty());
    let (guest, admission, mut guest_events) =
        signaling::join(&guest_link, JoinOptions::new("Guest")).await.unwrap();
    let Admission::Joined(guest_session) = admission else { panic!("the guest knocked") };
    assert_eq!(guest_session.participants.len(), 1);
    assert_eq!(guest_session.participants[0].id, host_session.peer_id);

    next_matching(
        &mut host_events,
        "peer_joined",
        |e| matches!(e, SignalingEvent::PeerJoined(p) if p.name == "Guest"),
    )
    .await;
    guest.signal(host_session.peer_id.clone(), offer("hello"));
    let got =
        next_matching(&mut host_events, "the signal", |e| matches!(e, SignalingEvent::Signal { .. })).await;
    assert_eq!(got, SignalingEvent::Signal { from: guest_session.peer_id.clone(), payload: offer("hello") });

    guest.leave();
    next_matching(&mut guest_events, "the end", |e| matches!(e, SignalingEvent::Ended(None))).await;
    next_matching(&mut host_events, "peer_left", |e| matches!(e, SignalingEvent::PeerLeft { .. })).await;
    drop(host);
}

#[tokio::test]
async fn a_relay_restart_is_survived_and_signals_flow_again() {
    let state = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(state.path(), "127.0.0.1:0");
    let port = relay.port;
    let (host_link, guest_link) = create_room(&relay).await;
    let (_host, admission, mut host_events) =
        signaling::join(&host_link, JoinOptions::new("Host")).await.unwrap();
    let Admission::Joined(host_session) = admission else { panic!("the host knocked") };
    let (guest, admission, mut guest_events) =
        signaling::join(&guest_link, JoinOptions::new("Guest")).await.unwrap();
    let Admission::Joined(guest_session) = admission else { panic!("the guest knocked") };

    relay.terminate();
    let reconnecting = next_matching(&mut guest_events, "reconnecting", |e| {
        matches!(e, SignalingEvent::Reconnecting { .. })
    })
    .await;
    eprintln!("guest: {reconnecting:?}");
    // Same state dir (token secret, certificate) and port: the same relay, restarted.
    let _relay = Relay::start(state.path(), &format!("127.0.0.1:{port}"));
    for (who, events) in [("host", &mut host_events), ("guest", &mut guest_events)] {
        let resumed = next_matching(events, "resumed", |e| matches!(e, SignalingEvent::Resumed { .. })).await;
        let SignalingEvent::Resumed { session, .. } = resumed else { unreachable!() };
        eprintln!("{who} resumed as {}", session.peer_id);
    }
    guest.signal(host_session.peer_id.clone(), offer("after the restart"));
    let got =
        next_matching(&mut host_events, "the signal", |e| matches!(e, SignalingEvent::Signal { .. })).await;
    assert_eq!(
        got,
        SignalingEvent::Signal { from: guest_session.peer_id, payload: offer("after the restart") }
    );
}

#[tokio::test]
async fn failures_are_told_apart() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, _) = create_room(&relay).await;

    // A wrong pin: the relay is there but is not the one the link names.
    let mut wrong_pin = host_link.clone();
    wrong_pin.fingerprint = Some(Fingerprint([7; 32]));
    let err = signaling::join(&wrong_pin, JoinOptions::new("A")).await.unwrap_err();
    assert!(matches!(&err, JoinError::RelayUnreachable { reason, .. } if reason.contains("TLS")), "{err}");

    // A forged token: the relay answers with its code.
    let mut forged = host_link.clone();
    forged.token = format!("{}x", forged.token);
    let err = signaling::join(&forged, JoinOptions::new("A")).await.unwrap_err();
    assert!(matches!(err, JoinError::Refused { code: ErrorCode::TokenInvalid, .. }), "{err}");

    // Creating a room: a wrong pin, a URL that is not a relay's.
    let err = rooms::create_room(&relay.url(), Some(Fingerprint([7; 32])), None, false).await.unwrap_err();
    assert!(matches!(&err, RoomError::Unreachable { reason, .. } if reason.contains("TLS")), "{err}");
    assert!(matches!(
        rooms::create_room("https://example.org", None, None, false).await,
        Err(RoomError::BadUrl(_))
    ));

    // Nothing listening.
    drop(relay);
    let err = signaling::join(&host_link, JoinOptions::new("A")).await.unwrap_err();
    assert!(
        matches!(&err, JoinError::RelayUnreachable { reason, .. } if reason.contains("network")),
        "{err}"
    );
    eprintln!("{err}");
}

#[tokio::test]
async fn a_relay_that_wants_an_api_key_refuses_to_create_rooms_without_one() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start_with(state.path(), "127.0.0.1:0", &["--api-key", "sesame"]);
    let err = rooms::create_room(&relay.url(), Some(pin(&relay)), None, false).await.unwrap_err();
    assert!(matches!(err, RoomError::Refused { status: 401, .. }), "{err}");
    let room = rooms::create_room(&relay.url(), Some(pin(&relay)), Some("sesame"), true).await.unwrap();
    assert_eq!(room.host.room, room.guest.room);
}

/// A TCP front for `relay` (as a load balancer is) whose first `drop_first` connections are
/// accepted and closed at once, as a balancer's are when it hands them to an instance that is
/// closing; later ones pass through. Returns its port and the count of connections it took.
async fn closing_front(
    relay: &Relay,
    drop_first: usize,
) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let taken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&taken);
    let backend = relay.port;
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < drop_first {
                drop(client);
                continue;
            }
            tokio::spawn(async move {
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", backend)).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    (port, taken)
}

#[tokio::test]
async fn a_join_handed_to_a_relay_that_closes_is_tried_again_and_seated() {
    let state = tempfile::tempdir().unwrap();
    let relay = Relay::start(state.path(), "127.0.0.1:0");
    let (host_link, _) = create_room(&relay).await;
    let through = |port: u16| {
        let mut link = host_link.clone();
        link.relay = format!("wss://localhost:{port}");
        link
    };

    // Two connections closed under it (a rolling upgrade behind a balancer): seated on the third.
    let (port, taken) = closing_front(&relay, 2).await;
    let (_signaling, admission, _events) =
        signaling::join(&through(port), JoinOptions::new("A")).await.unwrap();
    assert!(matches!(admission, Admission::Joined(_)));
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 3, "two tries closed, the third seated");

    // Every connection closed: after three more tries the lobby is told, within a few seconds.
    let (port, taken) = closing_front(&relay, usize::MAX).await;
    let started = std::time::Instant::now();
    let err = signaling::join(&through(port), JoinOptions::new("B")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(&err, JoinError::RelayUnreachable { .. }), "{err}");
    assert_eq!(taken.load(std::sync::atomic::Ordering::SeqCst), 4, "one try and three more");
    assert!(took < Duration::from_secs(5), "a relay that keeps closing is reported in {took:?}");
    eprintln!("after {took:?}: {err}");
}
