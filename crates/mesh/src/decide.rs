//! The engine's decisions, free of IO and clocks so they can be tested in fake time: who makes
//! the offer between two peers, how long to wait before the next reconnection attempt, and when
//! a peer connection's ICE must be restarted or given up on.

use std::time::Duration;

use confer_proto::PeerId;

/// Whether `local` makes the offer to `remote`: the peer whose id sorts first offers, the other
/// answers. Both sides compute the same answer from the same two ids, so two peers never offer
/// into each other (no glare), and a late joiner and an old member agree at once.
pub fn is_offerer(local: &PeerId, remote: &PeerId) -> bool {
    local.as_str() < remote.as_str()
}

/// Exponential back-off with jitter: attempt n waits a random time in [cap/2, cap], where cap
/// doubles from `base` up to `max`. The jitter spreads clients that lost the relay together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A back-off from `base` to `max`; `seed` drives the jitter (any value; tests fix it).
    pub fn new(base: Duration, max: Duration, seed: u64) -> Self {
        Self { base, max: max.max(base), attempt: 0, rng: seed | 1 }
    }

    /// Attempts made since the last success.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self.base.saturating_mul(1u32 << self.attempt.min(16)).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let unit = (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64;
        cap.mul_f64(0.5 + 0.5 * unit)
    }

    /// A success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A restart younger than this is not begun again for a network change.
const FRESH_RESTART: Duration = Duration::from_secs(2);

/// What a peer connection's ICE transport reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceEvent {
    /// Media can flow.
    Connected,
    /// Connectivity checks stopped succeeding; it may come back by itself.
    Disconnected,
    /// ICE gave up on every candidate pair.
    Failed,
    /// The machine's network changed (an interface came or went).
    NetworkChanged,
}

/// What to do about a peer connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IceAction {
    /// Restart ICE (the offerer sends a new offer with fresh credentials).
    Restart,
    /// Stop trying: report that there is no network path to this peer.
    GiveUp,
}

/// When to restart ICE and when to give up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcePolicy {
    /// How long a disconnected transport may recover by itself before a restart.
    pub disconnected_grace: Duration,
    /// Restarts without reaching Connected before giving up.
    pub max_restarts: u32,
    /// How long one restart may take to connect before the next.
    pub restart_timeout: Duration,
    /// How long a new connection may take to connect before the first restart (ICE may never
    /// report failure when it has no candidate pair to check).
    pub connect_timeout: Duration,
}

impl Default for IcePolicy {
    fn default() -> Self {
        Self {
            disconnected_grace: Duration::from_secs(2),
            max_restarts: 4,
            restart_timeout: Duration::from_secs(8),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IceState {
    /// Not connected yet, since this time.
    Connecting(Duration),
    /// Connected.
    Steady,
    /// Disconnected since this time.
    Disconnected(Duration),
    /// A restart was asked for at this time (by us as the offerer; for the answerer, the
    /// offerer's restart offer arrived).
    Restarting(Duration),
    /// The answerer, since this time: a restart was due and only the offerer makes it.
    Waiting(Duration),
    /// Given up.
    Abandoned,
}

/// One peer connection's recovery, in fake time: feed it events and the time, poll it for
/// actions. Times are any monotonic clock's readings, as durations since its start.
///
/// Only the offerer restarts ICE. The answerer runs the same deadlines, but a deadline that
/// passes only says a restart is due ([`IceAction::Restart`]: "no path yet"); its restarts are
/// the offerer's restart offers as they arrive ([`IceRecovery::restarted_by_peer`]), and it
/// gives up only once the offerer has made all of its restarts and the last one failed too, or
/// when the offerer has stopped restarting: never while the offerer may still find the path
/// (even when the offerer's restarts come late, held up with the relay).
#[derive(Debug, Clone)]
pub struct IceRecovery {
    policy: IcePolicy,
    state: IceState,
    restarts: u32,
    offerer: bool,
    /// The answerer, while our relay connection is away: the offerer's restart offers cannot
    /// reach us, so its deadlines wait.
    held: bool,
}

impl IceRecovery {
    /// The offerer's side of a connection created at `now`, not connected yet.
    pub fn new(policy: IcePolicy, now: Duration) -> Self {
        Self { policy, state: IceState::Connecting(now), restarts: 0, offerer: true, held: false }
    }

    /// The answerer's side of a connection created at `now`.
    pub fn answering(policy: IcePolicy, now: Duration) -> Self {
        Self { offerer: false, ..Self::new(policy, now) }
    }

    /// How long the answerer waits for the offerer's restart once one is due, before it takes
    /// the offerer to have stopped: a restart's timeout and half again (its offer may come a
    /// little after our deadline, having crossed the relay).
    fn patience(&self) -> Duration {
        self.policy.restart_timeout + self.policy.restart_timeout / 2
    }

    /// The answerer received the offerer's restart offer (new ICE credentials) at `now`. A
    /// connection given up on comes back: the offerer is trying again. Returns
    /// [`IceAction::Restart`] ("no path yet") when it ends the first attempt, which the
    /// offerer's clock may have timed out a moment before ours.
    pub fn restarted_by_peer(&mut self, now: Duration) -> Option<IceAction> {
        if self.offerer {
            return None;
        }
        let first_attempt_over = matches!(self.state, IceState::Connecting(_));
        match self.state {
            IceState::Abandoned => self.restarts = 1,
            // Offers held up with the relay arrive together: they are one restart's worth.
            IceState::Restarting(since) if now.saturating_sub(since) < FRESH_RESTART => {}
            _ => self.restarts = self.restarts.saturating_add(1),
        }
        self.state = IceState::Restarting(now);
        first_attempt_over.then_some(IceAction::Restart)
    }

    /// Our relay connection is away (`true`) or back (`false`) at `now`. The answerer's
    /// deadlines wait while it is away (the offerer's restart offers cannot reach us) and start
    /// again when it is back.
    pub fn relay_away(&mut self, away: bool, now: Duration) {
        if self.offerer || self.held == away {
            return;
        }
        self.held = away;
        if !away {
            self.state = match self.state {
                IceState::Waiting(_) => IceState::Waiting(now),
                IceState::Restarting(_) => IceState::Restarting(now),
                IceState::Connecting(_) => IceState::Connecting(now),
                IceState::Disconnected(_) => IceState::Disconnected(now),
                other => other,
            };
        }
    }

    /// Restarts since the connection was last connected.
    /// Whether a restart is under way (made, not yet connected).
    pub fn is_restarting(&self) -> bool {
        matches!(self.state, IceState::Restarting(_))
    }

    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The transport reported `event` at `now`; returns what to do at once, if anything.
    pub fn on_event(&mut self, event: IceEvent, now: Duration) -> Option<IceAction> {
        if self.state == IceState::Abandoned {
            match event {
                // A path found after all (the other side kept trying) is a path.
                IceEvent::Connected => {
                    self.state = IceState::Steady;
                    self.restarts = 0;
                }
                // A new network may have the path the old one lacked: start over.
                IceEvent::NetworkChanged if self.offerer => {
                    self.restarts = 0;
                    return Some(self.restart(now));
                }
                _ => {}
            }
            return None;
        }
        match event {
            IceEvent::Connected => {
                self.state = IceState::Steady;
                self.restarts = 0;
                None
            }
            IceEvent::Disconnected => {
                if matches!(self.state, IceState::Steady | IceState::Connecting(_)) {
                    self.state = IceState::Disconnected(now);
                }
                None
            }
            // The answerer cannot restart: it waits for the offerer (which sees the failure too,
            // or is asked to restart on our network change).
            IceEvent::Failed | IceEvent::NetworkChanged if !self.offerer => match self.state {
                IceState::Restarting(_) | IceState::Waiting(_) => None,
                _ => Some(self.restart(now)),
            },
            IceEvent::Failed | IceEvent::NetworkChanged => match self.state {
                // A restart under way keeps its own deadline.
                IceState::Restarting(_) if event == IceEvent::Failed => None,
                // One begun this recently gathered on the new addresses already; a second offer
                // before the first is answered would cross it (the answer to the first would meet
                // the second's credentials).
                IceState::Restarting(since) if now.saturating_sub(since) < FRESH_RESTART => None,
                _ => Some(self.restart(now)),
            },
        }
    }

    /// Time passed: returns what to do now, if anything.
    pub fn poll(&mut self, now: Duration) -> Option<IceAction> {
        if self.held {
            return None;
        }
        match self.state {
            IceState::Disconnected(since) if now.saturating_sub(since) >= self.policy.disconnected_grace => {
                Some(self.restart(now))
            }
            IceState::Restarting(since) if now.saturating_sub(since) >= self.policy.restart_timeout => {
                Some(self.restart(now))
            }
            IceState::Connecting(since) if now.saturating_sub(since) >= self.policy.connect_timeout => {
                Some(self.restart(now))
            }
            // The offerer made no restart for this long: it has stopped.
            IceState::Waiting(since) if now.saturating_sub(since) >= self.patience() => {
                self.state = IceState::Abandoned;
                Some(IceAction::GiveUp)
            }
            _ => None,
        }
    }

    /// A restart is due: the offerer makes it (or gives up after its last); the answerer waits
    /// for it (or gives up once the offerer has made its last).
    fn restart(&mut self, now: Duration) -> IceAction {
        if self.restarts >= self.policy.max_restarts {
            self.state = IceState::Abandoned;
            return IceAction::GiveUp;
        }
        if self.offerer {
            self.restarts += 1;
            self.state = IceState::Restarting(now);
        } else {
            self.state = IceState::Waiting(now);
        }
        IceAction::Restart
    }
}

/// The most a picture of this size and rate needs, bits per second: 0.1 bit per pixel per frame
/// (H.264 constrained baseline looks good there), within the configured `[min, max]`. Without
/// it a small picture grows to the configured maximum and a mesh sends it to every peer.
pub fn bitrate_ceiling(width: u32, height: u32, fps: u32, (min, max): (u32, u32)) -> u32 {
    let need = 0.1 * f64::from(width) * f64::from(height) * f64::from(fps);
    (need as u32).clamp(min, max.max(min))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(text: &str) -> PeerId {
        PeerId::parse(text).unwrap_or_else(|_| unreachable!("test ids are valid"))
    }

    #[test]
    fn exactly_one_of_two_peers_offers() {
        let (a, b) = (id("AAAAAAAAAAA"), id("bbbbbbbbbbb"));
        assert!(is_offerer(&a, &b));
        assert!(!is_offerer(&b, &a));
        assert!(!is_offerer(&a, &a), "nobody offers to itself");
    }

    #[test]
    fn back_off_doubles_to_its_cap_with_jitter_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(8), 42);
        let delays: Vec<Duration> = (0..8).map(|_| backoff.next_delay()).collect();
        for (n, delay) in delays.iter().enumerate() {
            let cap = Duration::from_millis(250 * (1 << n)).min(Duration::from_secs(8));
            assert!(
                *delay >= cap / 2 && *delay <= cap,
                "attempt {n}: {delay:?} outside [{:?}, {cap:?}]",
                cap / 2
            );
        }
        assert_eq!(backoff.attempt(), 8);
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(250));
        // Two clients that failed together wait different times.
        let (mut one, mut two) = (
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 1),
            Backoff::new(Duration::from_secs(1), Duration::from_secs(8), 2),
        );
        assert_ne!(one.next_delay(), two.next_delay());
    }

    #[test]
    fn a_brief_disconnection_recovers_without_a_restart() {
        let mut ice = IceRecovery::new(IcePolicy::default(), Duration::ZERO);
        let s = Duration::from_secs;
        assert_eq!(ice.on_event(IceEvent::Connected, s(1)), None);
        assert_eq!(ice.on_event(IceEvent::Disconnected, s(10)), None);
        assert_eq!(ice.poll(Duration::from_millis(11_500)), None);
        assert_eq!(ice.on_event(IceEvent::Connected, Duration::from_millis(11_800)), None);
        assert_eq!(ice.poll(s(20)), None, "recovered: nothing to do");
    }

    #[test]
    fn a_lasting_disconnection_restarts_ice_after_the_grace_period() {
        let mut ice = IceRecovery::new(IcePolicy::default(), Duration::ZERO);
        let s = Duration::from_secs;
        ice.on_event(IceEvent::Connected, s(1));
        ice.on_event(IceEvent::Disconnected, s(10));
        assert_eq!(ice.poll(Duration::from_millis(11_999)), None);
        assert_eq!(ice.poll(s(12)), Some(IceAction::Restart));
        // The restart works: the count starts over.
        ice.on_event(IceEvent::Connected, s(13));
        assert_eq!(ice.restarts(), 0);
    }

    #[test]
    fn failure_and_network_change_restart_at_once_and_repeated_failure_gives_up() {
        let policy = IcePolicy::default();
        let mut ice = IceRecovery::new(policy, Duration::ZERO);
        let s = Duration::from_secs;
        assert_eq!(ice.on_event(IceEvent::NetworkChanged, s(0)), Some(IceAction::Restart));
        // A failure report during a restart does not start another; the restart's timeout does.
        assert_eq!(ice.on_event(IceEvent::Failed, s(1)), None);
        // Nor does news of the same network change (the peer's `restart_ice`, our own look at
        // the addresses) while the restart is fresh; a later change does.
        assert_eq!(ice.on_event(IceEvent::NetworkChanged, Duration::from_millis(1_500)), None);
        assert_eq!(ice.on_event(IceEvent::NetworkChanged, s(3)), Some(IceAction::Restart));
        let mut ice = IceRecovery::new(policy, Duration::ZERO);
        assert_eq!(ice.on_event(IceEvent::NetworkChanged, s(0)), Some(IceAction::Restart));
        let mut now = s(0);
        let mut actions = vec![];
        for _ in 0..10 {
            now += policy.restart_timeout;
            if let Some(action) = ice.poll(now) {
                actions.push(action);
            }
        }
        assert_eq!(
            actions,
            [IceAction::Restart, IceAction::Restart, IceAction::Restart, IceAction::GiveUp],
            "four restarts in all, then give up"
        );
        assert_eq!(ice.on_event(IceEvent::Failed, now), None, "given up stays given up");
        assert_eq!(ice.poll(now + Duration::from_secs(60)), None);
        // Until the network changes: a new one may have the path the old one lacked.
        assert_eq!(ice.on_event(IceEvent::NetworkChanged, now), Some(IceAction::Restart));
        assert_eq!(ice.restarts(), 1);
    }

    /// The offerer's restarts as the answerer sees them: the offerer's deadlines, each restart
    /// offer arriving `delay` after it was made.
    /// What one side said, and when.
    type Said = Vec<(Duration, IceAction)>;

    fn answerer_against_offerer(delay: Duration) -> (Said, Said) {
        let policy = IcePolicy::default();
        let (mut offerer, mut answerer) =
            (IceRecovery::new(policy, Duration::ZERO), IceRecovery::answering(policy, Duration::ZERO));
        let (mut offers_in_flight, mut offerer_said, mut answerer_said) =
            (Vec::new(), Vec::new(), Vec::new());
        let step = Duration::from_millis(100);
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(120) {
            now += step;
            if let Some(action) = offerer.poll(now) {
                offerer_said.push((now, action));
                if action == IceAction::Restart {
                    offers_in_flight.push(now + delay);
                }
            }
            offers_in_flight.retain(|&arrives| {
                if arrives <= now {
                    let _ = answerer.restarted_by_peer(now);
                }
                arrives > now
            });
            answerer_said.extend(answerer.poll(now).map(|action| (now, action)));
        }
        (offerer_said, answerer_said)
    }

    #[test]
    fn the_answerer_never_gives_up_before_the_offerer_has() {
        for delay in [Duration::from_millis(50), Duration::from_secs(3), Duration::from_secs(7)] {
            let (offerer, answerer) = answerer_against_offerer(delay);
            let gave_up = |said: &[(Duration, IceAction)]| {
                said.iter().find(|(_, action)| *action == IceAction::GiveUp).map(|(at, _)| *at)
            };
            let (offerer_gave_up, answerer_gave_up) = (gave_up(&offerer), gave_up(&answerer));
            let offerer_gave_up = offerer_gave_up.expect("the offerer gives up after four restarts");
            let answerer_gave_up = answerer_gave_up.expect("the answerer gives up too, in the end");
            assert!(
                answerer_gave_up >= offerer_gave_up,
                "offers {delay:?} late: the answerer gave up at {answerer_gave_up:?}, before the offerer \
                 ({offerer_gave_up:?}); it said {answerer:?}"
            );
            assert!(
                answerer_gave_up <= offerer_gave_up + delay + IcePolicy::default().restart_timeout,
                "the answerer gave up at {answerer_gave_up:?}, long after the offerer ({offerer_gave_up:?})"
            );
            // It said "no path yet" once, before the first restart offer came, as the offerer did.
            assert_eq!(answerer.first(), Some(&(IcePolicy::default().connect_timeout, IceAction::Restart)));
        }
    }

    #[test]
    fn an_answerer_whose_offerer_stopped_gives_up_and_comes_back_with_its_next_restart() {
        let policy = IcePolicy::default();
        let mut ice = IceRecovery::answering(policy, Duration::ZERO);
        let s = Duration::from_secs;
        ice.on_event(IceEvent::Connected, s(1));
        // The path fails; the offerer (gone quiet) never restarts.
        assert_eq!(ice.on_event(IceEvent::Failed, s(10)), Some(IceAction::Restart));
        assert_eq!(ice.on_event(IceEvent::Failed, s(11)), None, "said once");
        assert_eq!(ice.poll(s(10) + policy.restart_timeout), None, "a late restart is still awaited");
        assert_eq!(ice.poll(s(10) + policy.restart_timeout * 2), Some(IceAction::GiveUp));
        // Its network changes and it restarts after all: the connection is tried again.
        assert_eq!(ice.restarted_by_peer(s(40)), None);
        assert!(ice.is_restarting());
        assert_eq!(ice.on_event(IceEvent::Connected, s(41)), None);
        assert_eq!(ice.poll(s(100)), None);
        // A restart offer of ours is no restart by the peer.
        let mut offerer = IceRecovery::new(policy, Duration::ZERO);
        assert_eq!(offerer.restarted_by_peer(s(1)), None);
        assert!(!offerer.is_restarting());
    }

    #[test]
    fn an_answerer_waits_out_a_relay_outage_and_counts_held_up_offers_once() {
        let policy = IcePolicy::default();
        let s = Duration::from_secs;
        let mut ice = IceRecovery::answering(policy, Duration::ZERO);
        ice.on_event(IceEvent::Connected, s(1));
        assert_eq!(ice.on_event(IceEvent::Failed, s(10)), Some(IceAction::Restart));
        // The relay is away for a minute: the offerer's restart offers cannot reach us.
        ice.relay_away(true, s(11));
        assert_eq!(ice.poll(s(60)), None, "no giving up while the offers cannot come");
        ice.relay_away(false, s(71));
        // Three offers queued during the outage arrive together: one restart.
        for ms in [71_100, 71_200, 71_300] {
            assert_eq!(ice.restarted_by_peer(Duration::from_millis(ms)), None);
        }
        assert_eq!(ice.restarts(), 1);
        assert_eq!(ice.poll(s(75)), None);
        // With no further offer, the deadlines run again from the relay's return.
        assert_eq!(ice.poll(Duration::from_millis(79_300)), Some(IceAction::Restart));
        assert_eq!(ice.poll(s(79) + policy.restart_timeout * 2), Some(IceAction::GiveUp));
    }

    #[test]
    fn the_bitrate_ceiling_follows_the_picture_within_bounds() {
        let bounds = (300_000, 1_500_000);
        // The ceiling follows the picture: small pictures need little.
        assert_eq!(bitrate_ceiling(640, 360, 30, bounds), 691_200);
        assert_eq!(bitrate_ceiling(320, 180, 15, bounds), 300_000);
        assert_eq!(bitrate_ceiling(1_280, 720, 30, bounds), 1_500_000);
    }

    #[test]
    fn a_connection_that_never_connects_is_restarted_and_then_given_up() {
        // No candidate pair at all: ICE itself may never say "failed".
        let policy = IcePolicy::default();
        let mut ice = IceRecovery::new(policy, Duration::from_secs(5));
        assert_eq!(ice.poll(Duration::from_secs(5) + policy.connect_timeout / 2), None);
        let mut now = Duration::from_secs(5) + policy.connect_timeout;
        assert_eq!(ice.poll(now), Some(IceAction::Restart));
        let mut actions = vec![];
        for _ in 0..10 {
            now += policy.restart_timeout;
            actions.extend(ice.poll(now));
        }
        assert_eq!(actions, [IceAction::Restart, IceAction::Restart, IceAction::Restart, IceAction::GiveUp]);
        // Connecting in time needs nothing.
        let mut ice = IceRecovery::new(policy, Duration::ZERO);
        ice.on_event(IceEvent::Connected, Duration::from_secs(1));
        assert_eq!(ice.poll(Duration::from_secs(60)), None);
    }
}
