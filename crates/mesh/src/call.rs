//! The call's decisions about its peers, free of IO and clocks (as the relay's `room.rs` is):
//! who is in the call and who is kept, who makes the offer, what counts as connected, when each
//! connection restarts ICE or is given up, and what a relay resume with lost signals or a network
//! change means for each. The engine feeds it what happens ([`Input`]) with the time and carries
//! out what it says ([`Output`]); the tests drive it in fake time.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use confer_proto::PeerId;

use crate::decide::{IceAction, IceEvent, IcePolicy, IceRecovery, is_offerer};

/// How long a peer the relay did not list after a resume is kept: twice the relay's default
/// grace period, the longest a seat can take to be rebuilt after a relay restart.
pub const UNCONFIRMED_LIMIT: Duration = Duration::from_secs(40);

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Seated (or admitted) as `me`, with `others` in the room.
    Seated {
        /// Our id.
        me: PeerId,
        /// Everyone else.
        others: Vec<PeerId>,
    },
    /// The relay says this participant is in the room (it joined, or resumed its seat).
    Present(PeerId),
    /// The relay says this participant left.
    Left(PeerId),
    /// Our relay connection was resumed: the relay lists `present`; with `gap`, signals sent
    /// while we were away were lost.
    Resumed {
        /// Everyone else the relay lists.
        present: Vec<PeerId>,
        /// Signals were lost.
        gap: bool,
    },
    /// The connection to this peer could not be made (the engine said why).
    OpenFailed(PeerId),
    /// This peer connection's ICE transport reported.
    Ice(PeerId, IceEvent),
    /// This peer's offer came with new ICE credentials: it restarted ICE.
    RestartedByPeer(PeerId),
    /// This peer asked us to restart ICE (its network changed).
    RestartAsked(PeerId),
    /// This machine's network changed.
    NetworkChanged,
    /// Our relay connection dropped (it is being resumed): signals cannot reach us.
    RelayLost,
    /// Time passed (the engine says so every second).
    Tick,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Make a connection to this peer; the offerer sends the first offer.
    Open {
        /// To whom.
        peer: PeerId,
        /// We make the offer.
        offerer: bool,
    },
    /// Send this peer an offer with new ICE credentials.
    Restart(PeerId),
    /// Ask this peer to restart ICE (`restart_ice`): it offers, so only it can.
    AskRestart(PeerId),
    /// Media flows with this peer (again): ask for keyframes, say how the path was made.
    Connected(PeerId),
    /// No path to this peer yet: its first attempt timed out and restarts go on. Said once for a
    /// connection that never connected.
    NoPathYet(PeerId),
    /// No path to this peer: every restart failed (or, for the answerer, the offerer stopped).
    GaveUp {
        /// To whom.
        peer: PeerId,
        /// Restarts made.
        restarts: u32,
    },
    /// Forget this peer and close its connection.
    Close {
        /// Who.
        peer: PeerId,
        /// The relay stopped listing it after a resume and it did not come back in
        /// [`UNCONFIRMED_LIMIT`] (else it left).
        timed_out: bool,
    },
}

/// One peer, as the call sees it.
#[derive(Debug)]
struct Link {
    offerer: bool,
    ice: IceRecovery,
    /// Media flows (ICE connected, not disconnected or failed since).
    connected: bool,
    /// Connected at least once.
    ever_connected: bool,
    /// "No path yet" was said.
    warned: bool,
    /// The relay did not list it when we resumed, since then.
    unconfirmed: Option<Duration>,
}

/// The call's peers and what is to be done about them.
#[derive(Debug)]
pub struct Call {
    policy: IcePolicy,
    me: Option<PeerId>,
    links: BTreeMap<PeerId, Link>,
    out: VecDeque<Output>,
}

impl Call {
    /// A call not seated yet.
    pub fn new(policy: IcePolicy) -> Self {
        Self { policy, me: None, links: BTreeMap::new(), out: VecDeque::new() }
    }

    /// Takes what happened at `now` (any monotonic clock, as a duration since its start).
    pub fn handle_input(&mut self, now: Duration, input: Input) {
        match input {
            Input::Seated { me, others } => {
                self.me = Some(me);
                for peer in others {
                    self.open(peer, now);
                }
            }
            Input::Present(peer) => {
                if let Some(link) = self.links.get_mut(&peer) {
                    link.unconfirmed = None;
                } else {
                    self.open(peer, now);
                }
            }
            Input::Left(peer) => {
                if self.links.remove(&peer).is_some() {
                    self.out.push_back(Output::Close { peer, timed_out: false });
                }
            }
            Input::Resumed { present, gap } => self.resumed(&present, gap, now),
            Input::OpenFailed(peer) => {
                self.links.remove(&peer);
            }
            Input::Ice(peer, event) => self.ice(&peer, event, now),
            Input::RestartedByPeer(peer) => {
                let action = self.links.get_mut(&peer).and_then(|link| link.ice.restarted_by_peer(now));
                self.act(&peer, action);
            }
            Input::RestartAsked(peer) => {
                // Where we offer, restart now rather than after the old path fails; not when a
                // restart is under way (a peer cannot keep us restarting).
                let Some(link) = self.links.get_mut(&peer) else { return };
                if link.offerer && !link.ice.is_restarting() {
                    let action = link.ice.on_event(IceEvent::NetworkChanged, now);
                    self.act(&peer, action);
                }
            }
            Input::NetworkChanged => {
                let peers: Vec<(PeerId, bool)> =
                    self.links.iter().map(|(id, l)| (id.clone(), l.offerer)).collect();
                for (peer, offerer) in peers {
                    if offerer {
                        let action = self
                            .links
                            .get_mut(&peer)
                            .and_then(|l| l.ice.on_event(IceEvent::NetworkChanged, now));
                        self.act(&peer, action);
                    } else {
                        // Only the offerer restarts: an answerer that counted the change as a
                        // restart of its own would wait for a reconnection that need not come.
                        self.out.push_back(Output::AskRestart(peer));
                    }
                }
            }
            Input::RelayLost => {
                for link in self.links.values_mut() {
                    link.ice.relay_away(true, now);
                }
            }
            Input::Tick => self.tick(now),
        }
    }

    /// The next thing to do, in the order decided.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// Whether media flows with `peer`.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.links.get(peer).is_some_and(|link| link.connected)
    }

    /// Whether we make the offers to `peer`.
    pub fn is_offerer(&self, peer: &PeerId) -> bool {
        self.links.get(peer).is_some_and(|link| link.offerer)
    }

    /// ICE restarts of the connection to `peer` since it last connected.
    pub fn restarts(&self, peer: &PeerId) -> u32 {
        self.links.get(peer).map_or(0, |link| link.ice.restarts())
    }

    /// The peers the call keeps, in id order.
    pub fn peers(&self) -> impl Iterator<Item = &PeerId> {
        self.links.keys()
    }

    fn open(&mut self, peer: PeerId, now: Duration) {
        let Some(me) = &self.me else { return };
        if *me == peer || self.links.contains_key(&peer) {
            return;
        }
        let offerer = is_offerer(me, &peer);
        let ice = if offerer {
            IceRecovery::new(self.policy, now)
        } else {
            IceRecovery::answering(self.policy, now)
        };
        let link =
            Link { offerer, ice, connected: false, ever_connected: false, warned: false, unconfirmed: None };
        self.links.insert(peer.clone(), link);
        self.out.push_back(Output::Open { peer, offerer });
    }

    fn resumed(&mut self, present: &[PeerId], gap: bool, now: Duration) {
        for link in self.links.values_mut() {
            link.ice.relay_away(false, now);
        }
        for peer in present {
            self.handle_input(now, Input::Present(peer.clone()));
        }
        // After a relay restart the others come back one by one: a peer missing from the list
        // is kept (its media may well be flowing) until it returns, or until it could no longer.
        for (id, link) in &mut self.links {
            if !present.contains(id) {
                link.unconfirmed.get_or_insert(now);
            }
        }
        if !gap {
            return;
        }
        // Signals were lost: renegotiate where we offer and media is not flowing, through the
        // ICE recovery (its deadlines, its count); not where a restart is under way: its offer,
        // queued while the relay was away, goes out now, and a second one would cross it (the
        // answer to the first would meet the second's credentials, and the path would stay dead).
        let stalled: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, link)| link.offerer && !link.connected && !link.ice.is_restarting())
            .map(|(id, _)| id.clone())
            .collect();
        for peer in stalled {
            let action =
                self.links.get_mut(&peer).and_then(|l| l.ice.on_event(IceEvent::NetworkChanged, now));
            self.act(&peer, action);
        }
    }

    fn ice(&mut self, peer: &PeerId, event: IceEvent, now: Duration) {
        let Some(link) = self.links.get_mut(peer) else { return };
        let action = link.ice.on_event(event, now);
        match event {
            // Media is not flowing: a resume with lost signals renegotiates, and the next
            // connection asks for a keyframe again.
            IceEvent::Disconnected | IceEvent::Failed => link.connected = false,
            IceEvent::Connected if !link.connected => {
                (link.connected, link.ever_connected) = (true, true);
                self.out.push_back(Output::Connected(peer.clone()));
            }
            IceEvent::Connected | IceEvent::NetworkChanged => {}
        }
        self.act(peer, action);
    }

    fn tick(&mut self, now: Duration) {
        let expired: Vec<PeerId> = self
            .links
            .iter()
            .filter(|(_, link)| {
                link.unconfirmed.is_some_and(|since| now.saturating_sub(since) > UNCONFIRMED_LIMIT)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for peer in expired {
            self.links.remove(&peer);
            self.out.push_back(Output::Close { peer, timed_out: true });
        }
        let peers: Vec<PeerId> = self.links.keys().cloned().collect();
        for peer in peers {
            let action = self.links.get_mut(&peer).and_then(|link| link.ice.poll(now));
            self.act(&peer, action);
        }
    }

    fn act(&mut self, peer: &PeerId, action: Option<IceAction>) {
        let Some(link) = self.links.get_mut(peer) else { return };
        match action {
            None => {}
            Some(IceAction::Restart) => {
                // The first attempt timed out without a connection: say so now, with the
                // cause, rather than after every restart has failed too.
                if !link.ever_connected && !link.warned {
                    link.warned = true;
                    self.out.push_back(Output::NoPathYet(peer.clone()));
                }
                if link.offerer {
                    self.out.push_back(Output::Restart(peer.clone()));
                }
            }
            Some(IceAction::GiveUp) => {
                let restarts = link.ice.restarts();
                self.out.push_back(Output::GaveUp { peer: peer.clone(), restarts });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> PeerId {
        PeerId::parse(text).unwrap_or_else(|_| unreachable!("test ids are valid"))
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Everything to do now.
    fn drain(call: &mut Call) -> Vec<Output> {
        std::iter::from_fn(|| call.poll_output()).collect()
    }

    /// Seated as `bbbbbbbbbbb` with `aaaaaaaaaaa` (who offers to us) and `ccccccccccc` (to whom we
    /// offer), both connected.
    fn seated_and_connected() -> (Call, PeerId, PeerId) {
        let (a, me, c) = (id("aaaaaaaaaaa"), id("bbbbbbbbbbb"), id("ccccccccccc"));
        let mut call = Call::new(IcePolicy::default());
        call.handle_input(s(0), Input::Seated { me, others: vec![a.clone(), c.clone()] });
        assert_eq!(
            drain(&mut call),
            [
                Output::Open { peer: a.clone(), offerer: false },
                Output::Open { peer: c.clone(), offerer: true }
            ]
        );
        for peer in [&a, &c] {
            call.handle_input(s(1), Input::Ice(peer.clone(), IceEvent::Connected));
        }
        assert_eq!(drain(&mut call), [Output::Connected(a.clone()), Output::Connected(c.clone())]);
        (call, a, c)
    }

    #[test]
    fn each_pair_has_one_offerer_and_nobody_is_opened_twice() {
        let (mut call, a, c) = seated_and_connected();
        assert!(!call.is_offerer(&a) && call.is_offerer(&c));
        call.handle_input(s(2), Input::Present(a.clone()));
        call.handle_input(s(2), Input::Present(id("bbbbbbbbbbb")));
        assert_eq!(drain(&mut call), [], "known, or ourselves");
        let mut unseated = Call::new(IcePolicy::default());
        unseated.handle_input(s(0), Input::Present(a));
        assert_eq!(drain(&mut unseated), [], "nothing before a seat");
    }

    #[test]
    fn after_a_relay_restart_a_peer_not_listed_is_kept_until_it_could_no_longer_come_back() {
        let (mut call, a, c) = seated_and_connected();
        // The relay restarted and lists only `a` so far: `c`'s media flows on.
        call.handle_input(s(10), Input::Resumed { present: vec![a.clone()], gap: false });
        call.handle_input(s(30), Input::Tick);
        assert_eq!(drain(&mut call), []);
        assert!(call.is_connected(&c));
        // `c` comes back in time: kept for good.
        call.handle_input(s(45), Input::Present(c.clone()));
        call.handle_input(s(100), Input::Tick);
        assert_eq!(drain(&mut call), []);
        // Another restart, and this time `a` never returns: closed after the limit, not before.
        call.handle_input(s(200), Input::Resumed { present: vec![c.clone()], gap: false });
        call.handle_input(s(200) + UNCONFIRMED_LIMIT, Input::Tick);
        assert_eq!(drain(&mut call), []);
        call.handle_input(s(201) + UNCONFIRMED_LIMIT, Input::Tick);
        assert_eq!(drain(&mut call), [Output::Close { peer: a.clone(), timed_out: true }]);
        assert_eq!(call.peers().collect::<Vec<_>>(), [&c]);
        // A resume lists a newcomer: it is opened.
        let d = id("ddddddddddd");
        call.handle_input(s(300), Input::Resumed { present: vec![c, d.clone()], gap: false });
        assert_eq!(drain(&mut call), [Output::Open { peer: d, offerer: true }]);
    }

    #[test]
    fn lost_signals_renegotiate_only_stalled_pairs_we_offer_and_not_twice() {
        let (mut call, a, c) = seated_and_connected();
        let d = id("ddddddddddd");
        call.handle_input(s(2), Input::Present(d.clone()));
        drain(&mut call);
        // `c` and `a` fail while the relay is away; `d` never connected.
        call.handle_input(s(5), Input::Ice(c.clone(), IceEvent::Failed));
        call.handle_input(s(5), Input::Ice(a.clone(), IceEvent::Failed));
        assert_eq!(drain(&mut call), [Output::Restart(c.clone())], "`a` offers: only it restarts");
        call.handle_input(s(6), Input::Resumed { present: vec![a.clone(), c.clone(), d.clone()], gap: true });
        // `c`'s restart is under way (its queued offer goes out now): a second would cross it.
        // `d` has its first offer unanswered: renegotiated (and said to have no path yet).
        assert_eq!(drain(&mut call), [Output::NoPathYet(d.clone()), Output::Restart(d)]);
        // A resume without lost signals renegotiates nothing.
        call.handle_input(s(30), Input::Resumed { present: vec![a], gap: false });
        assert_eq!(drain(&mut call), []);
    }

    #[test]
    fn a_network_change_restarts_where_we_offer_and_asks_where_the_peer_does() {
        let (mut call, a, c) = seated_and_connected();
        call.handle_input(s(10), Input::NetworkChanged);
        assert_eq!(drain(&mut call), [Output::AskRestart(a.clone()), Output::Restart(c.clone())]);
        // The peer's own change, asked of us while our restart is fresh: not restarted again.
        call.handle_input(s(11), Input::RestartAsked(c.clone()));
        assert_eq!(drain(&mut call), []);
        call.handle_input(s(12), Input::Ice(c.clone(), IceEvent::Connected));
        // A peer that offers cannot be made to restart by asking us.
        call.handle_input(s(20), Input::RestartAsked(a));
        assert_eq!(drain(&mut call), []);
        call.handle_input(s(30), Input::RestartAsked(c.clone()));
        assert_eq!(drain(&mut call), [Output::Restart(c)]);
    }

    #[test]
    fn a_peer_that_never_connects_is_said_unreachable_once_then_given_up_by_both_sides() {
        let policy = IcePolicy::default();
        let (a, me) = (id("aaaaaaaaaaa"), id("bbbbbbbbbbb"));
        // We answer `a`, which restarts on time.
        let mut call = Call::new(policy);
        call.handle_input(s(0), Input::Seated { me, others: vec![a.clone()] });
        drain(&mut call);
        let mut said = Vec::new();
        let mut now = s(0);
        let mut next_restart = policy.connect_timeout;
        while now < s(120) {
            now += Duration::from_millis(250);
            if now >= next_restart + Duration::from_millis(250) && call.restarts(&a) < policy.max_restarts {
                // The offerer's restart offer, 250 ms after our own deadline.
                call.handle_input(now, Input::RestartedByPeer(a.clone()));
                next_restart = now + policy.restart_timeout;
            }
            call.handle_input(now, Input::Tick);
            said.extend(drain(&mut call).into_iter().map(|output| (now, output)));
        }
        let outputs: Vec<&Output> = said.iter().map(|(_, output)| output).collect();
        assert_eq!(
            outputs,
            [
                &Output::NoPathYet(a.clone()),
                &Output::GaveUp { peer: a.clone(), restarts: policy.max_restarts }
            ],
            "{said:?}"
        );
        // Not before the offerer's last restart has had its time.
        let last_restart = policy.connect_timeout + policy.restart_timeout * (policy.max_restarts - 1);
        assert!(said[1].0 >= last_restart + policy.restart_timeout, "{said:?}");
    }

    #[test]
    fn an_answerer_says_no_path_yet_when_the_offerers_first_restart_comes_before_its_own_deadline() {
        let (a, me) = (id("aaaaaaaaaaa"), id("bbbbbbbbbbb"));
        let mut call = Call::new(IcePolicy::default());
        call.handle_input(s(0), Input::Seated { me, others: vec![a.clone()] });
        drain(&mut call);
        call.handle_input(Duration::from_millis(9_800), Input::RestartedByPeer(a.clone()));
        assert_eq!(drain(&mut call), [Output::NoPathYet(a.clone())]);
        // Said once: not again at its own deadline, nor with the next restart.
        call.handle_input(s(10), Input::Tick);
        call.handle_input(s(18), Input::RestartedByPeer(a));
        assert_eq!(drain(&mut call), []);
    }

    #[test]
    fn a_connection_that_could_not_be_made_or_whose_peer_left_is_forgotten() {
        let (mut call, a, c) = seated_and_connected();
        call.handle_input(s(2), Input::Left(a.clone()));
        assert_eq!(drain(&mut call), [Output::Close { peer: a.clone(), timed_out: false }]);
        call.handle_input(s(2), Input::Left(a.clone()));
        assert_eq!(drain(&mut call), [], "closed once");
        assert!(!call.is_connected(&a));
        call.handle_input(s(3), Input::OpenFailed(c.clone()));
        call.handle_input(s(60), Input::Tick);
        assert_eq!(drain(&mut call), [], "nothing more about it");
        // It can be tried again when the relay lists it again.
        call.handle_input(s(61), Input::Present(c.clone()));
        assert_eq!(drain(&mut call), [Output::Open { peer: c, offerer: true }]);
    }
}
