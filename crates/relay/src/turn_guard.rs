//! What the `turn` server must not decide alone. Each of its listening `Conn`s (UDP, TCP, TLS) is
//! wrapped in a [`GuardedConn`] that looks at requests before the server sees them and at its
//! answers as they leave:
//! - CreatePermission and ChannelBind naming a peer the filter refuses (loopback, private,
//!   link-local and the metadata address, …: [`peer_allowed`]) are answered 403 (Forbidden) here,
//!   signed as an answer to an authenticated request must be, and never reach the server. The
//!   relayed socket's own filter still drops every datagram to or from such a peer, whatever a
//!   client tries.
//! - Allocate over its credential's or its client address's quota is answered 486 (Allocation
//!   Quota Reached). An allocation counts from the server's success answer until the server
//!   says it ended ([`Ledger::released`]).
//! - What is neither STUN nor ChannelData, and STUN that does not decode, is dropped and counted.
//!   The server never sees it (on streams, the framing already closed such a connection).
//! - An Allocate whose credentials do not verify gets 401 (the `turn` crate would answer 400),
//!   and counts as an authentication failure. (Other requests need an allocation, made with
//!   credentials that verified.)
//!
//! The checks cost a table lookup on the media path (ChannelData passes at its first byte); only
//! the rare requests above are decoded, and only requests whose credentials verify are answered
//! here (the rest go on to the server, which challenges them).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stun::attributes::{
    ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS,
};
use stun::error_code::{
    CODE_ALLOC_QUOTA_REACHED, CODE_BAD_REQUEST, CODE_FORBIDDEN, CODE_INSUFFICIENT_CAPACITY,
    CODE_UNAUTHORIZED, ErrorCode, ErrorCodeAttribute,
};
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::{
    CLASS_ERROR_RESPONSE, CLASS_REQUEST, CLASS_SUCCESS_RESPONSE, Getter as _, METHOD_ALLOCATE,
    METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, Message, MessageType, Setter,
};
use stun::textattrs::TextAttribute;
use turn::auth::AuthHandler as _;
use turn::proto::peeraddr::PeerAddress;
use webrtc_util::Conn;

use crate::stun_turn::{IpRange, RestAuth, TurnMetrics, peer_allowed};

/// Requests awaiting the server's answer, at most (a flood of signed requests that are never
/// answered cannot grow the table past this).
const PENDING_MAX: usize = 4_096;
/// A request not answered within this long is forgotten.
const PENDING_TTL: Duration = Duration::from_secs(10);

/// Allocations one credential, and one client address, may hold at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Per TURN username (one participant's credential).
    pub per_user: usize,
    /// Per client IP address (a NAT shares one among everyone behind it).
    pub per_address: usize,
}

impl Default for Quotas {
    fn default() -> Self {
        // A participant in a full room of 8 gathers through up to three URLs (UDP, TCP, TLS)
        // for each of 7 peers: 21 allocations, more across ICE restarts.
        Self { per_user: 64, per_address: 256 }
    }
}

/// Why an allocation was refused, for the metrics' `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The relay's cap on allocations in all (508).
    Capacity,
    /// The credential's quota (486).
    UserQuota,
    /// The client address's quota (486).
    AddressQuota,
}

impl Refusal {
    pub(crate) const ALL: [Self; 3] = [Self::Capacity, Self::UserQuota, Self::AddressQuota];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Capacity => "capacity",
            Self::UserQuota => "user_quota",
            Self::AddressQuota => "address_quota",
        }
    }
}

/// A request the server has not answered yet.
struct Pending {
    at: Instant,
    /// An Allocate: the credential and client address its allocation will count against.
    allocate: Option<(String, IpAddr)>,
    /// Credentials that did not verify: the 401 to send in place of the server's 400 (the
    /// `turn` crate answers a wrong or unknown credential 400 Bad Request, where RFC 8656 §5 and
    /// every client expect 401 Unauthorized).
    challenge: Option<Vec<u8>>,
}

/// Who holds how many allocations, over every listener.
#[derive(Default)]
pub(crate) struct Ledger {
    state: Mutex<LedgerState>,
}

#[derive(Default)]
struct LedgerState {
    by_user: HashMap<String, usize>,
    by_address: HashMap<IpAddr, usize>,
    pending: HashMap<[u8; 12], Pending>,
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An allocation of `username`'s from `client` ended (the server's close notification).
    pub(crate) fn released(&self, username: &str, client: IpAddr) {
        let mut state = self.lock();
        decrement(&mut state.by_user, username);
        decrement(&mut state.by_address, &client);
    }
}

fn decrement<K: std::hash::Hash + Eq + std::borrow::Borrow<Q>, Q: std::hash::Hash + Eq + ?Sized>(
    counts: &mut HashMap<K, usize>,
    key: &Q,
) {
    if let Some(count) = counts.get_mut(key) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(key);
        }
    }
}

/// What every listener's guard shares.
pub(crate) struct Guard {
    pub(crate) allowed: Arc<Vec<IpRange>>,
    pub(crate) auth: Arc<RestAuth>,
    pub(crate) realm: String,
    pub(crate) quotas: Quotas,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) metrics: Arc<TurnMetrics>,
}

/// What to do with a message from a client.
enum Verdict {
    Pass,
    Drop,
    Answer(Vec<u8>),
}

impl Guard {
    fn inspect(&self, message: &[u8], from: SocketAddr) -> Verdict {
        match message.first() {
            // ChannelData: its 4-byte header must fit, and the data it announces.
            Some(0x40..=0x4F) => {
                let announced =
                    message.get(2..4).map(|len| 4 + usize::from(u16::from_be_bytes([len[0], len[1]])));
                if announced.is_some_and(|announced| announced <= message.len()) {
                    Verdict::Pass
                } else {
                    self.malformed()
                }
            }
            Some(0x00 | 0x01) => {
                let mut request = Message::new();
                if request.unmarshal_binary(message).is_err() {
                    return self.malformed();
                }
                if request.typ.class == CLASS_REQUEST {
                    self.inspect_request(&mut request, from)
                } else {
                    Verdict::Pass
                }
            }
            _ => self.malformed(),
        }
    }

    fn malformed(&self) -> Verdict {
        self.metrics.malformed.fetch_add(1, Relaxed);
        Verdict::Drop
    }

    fn inspect_request(&self, request: &mut Message, from: SocketAddr) -> Verdict {
        if !request.contains(ATTR_MESSAGE_INTEGRITY) {
            // Unauthenticated: the server challenges it (401 with realm and nonce).
            return Verdict::Pass;
        }
        let method = request.typ.method;
        let Some((username, key)) = self.verified(request) else {
            // Wrong or expired credentials: the server refuses them (counted as its answer
            // leaves, and made a 401 with the request's realm and nonce). Only an Allocate is
            // remembered for that: the server answers it always, while a permission or refresh
            // without an allocation gets no answer, and would sit in the table until it expires.
            if method == METHOD_ALLOCATE {
                self.remember(request, None, challenge(request));
            }
            return Verdict::Pass;
        };
        if method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND {
            if peers(request).iter().any(|peer| !peer_allowed(*peer, &self.allowed)) {
                self.metrics.permissions_refused.fetch_add(1, Relaxed);
                return answer(request, CODE_FORBIDDEN, key).map_or(Verdict::Drop, Verdict::Answer);
            }
        } else if method == METHOD_ALLOCATE {
            let refusal = {
                let state = self.ledger.lock();
                if state.by_user.get(&username).copied().unwrap_or(0) >= self.quotas.per_user {
                    Some(Refusal::UserQuota)
                } else if state.by_address.get(&from.ip()).copied().unwrap_or(0) >= self.quotas.per_address {
                    Some(Refusal::AddressQuota)
                } else {
                    None
                }
            };
            if let Some(refusal) = refusal {
                self.metrics.count_refusal(refusal);
                return answer(request, CODE_ALLOC_QUOTA_REACHED, key).map_or(Verdict::Drop, Verdict::Answer);
            }
            self.remember(request, Some((username, from.ip())), None);
        }
        Verdict::Pass
    }

    /// The request's username and long-term key, if its MESSAGE-INTEGRITY verifies with them.
    fn verified(&self, request: &mut Message) -> Option<(String, Vec<u8>)> {
        let username = TextAttribute::get_from_as(request, ATTR_USERNAME).ok()?.text;
        let realm = TextAttribute::get_from_as(request, ATTR_REALM).ok()?.text;
        if realm != self.realm {
            return None;
        }
        let key = self.auth.auth_handle(&username, &realm, SocketAddr::from(([0, 0, 0, 0], 0))).ok()?;
        MessageIntegrity(key.clone()).check(request).ok()?;
        Some((username, key))
    }

    fn remember(&self, request: &Message, allocate: Option<(String, IpAddr)>, challenge: Option<Vec<u8>>) {
        let mut state = self.ledger.lock();
        if state.pending.len() >= PENDING_MAX {
            let now = Instant::now();
            state.pending.retain(|_, pending| now.duration_since(pending.at) < PENDING_TTL);
            if state.pending.len() >= PENDING_MAX {
                return;
            }
        }
        state.pending.insert(request.transaction_id.0, Pending { at: Instant::now(), allocate, challenge });
    }

    /// The server's answer leaving: counts an allocation made, a refusal, an authentication
    /// failure; `Some` is the answer to send instead.
    fn observe(&self, message: &[u8]) -> Option<Vec<u8>> {
        // STUN answers only: a first byte of 0x00 or 0x01 and the class bit C1 (0x0100) set.
        let (Some(&first), Some(&second)) = (message.first(), message.get(1)) else {
            return None;
        };
        if first > 0x01 || u16::from_be_bytes([first, second]) & 0x0100 == 0 {
            return None;
        }
        let id = message.get(8..20).and_then(|id| <[u8; 12]>::try_from(id).ok())?;
        let pending = self.ledger.lock().pending.remove(&id)?;
        let mut answer = Message::new();
        if answer.unmarshal_binary(message).is_err() {
            return None;
        }
        if answer.typ.class == CLASS_SUCCESS_RESPONSE {
            if let Some((username, address)) = pending.allocate {
                let mut state = self.ledger.lock();
                *state.by_user.entry(username).or_default() += 1;
                *state.by_address.entry(address).or_default() += 1;
            }
            return None;
        }
        let mut code = ErrorCodeAttribute::default();
        if answer.typ.class != CLASS_ERROR_RESPONSE || code.get_from(&answer).is_err() {
            return None;
        }
        if code.code == CODE_UNAUTHORIZED || (code.code == CODE_BAD_REQUEST && pending.challenge.is_some()) {
            self.metrics.auth_failures.fetch_add(1, Relaxed);
            return pending.challenge;
        }
        if code.code == CODE_INSUFFICIENT_CAPACITY && pending.allocate.is_some() {
            self.metrics.count_refusal(Refusal::Capacity);
        }
        None
    }
}

/// The peer addresses a CreatePermission or ChannelBind names (every XOR-PEER-ADDRESS). One
/// that does not decode reads as unspecified, which no filter allows.
fn peers(request: &Message) -> Vec<IpAddr> {
    let unspecified = IpAddr::from([0, 0, 0, 0]);
    request
        .attributes
        .0
        .iter()
        .filter(|attr| attr.typ == ATTR_XOR_PEER_ADDRESS)
        .map(|attr| {
            let mut alone = Message::new();
            alone.transaction_id = request.transaction_id;
            alone.attributes.0.push(attr.clone());
            let mut peer = PeerAddress::default();
            peer.get_from(&alone).map_or(unspecified, |()| peer.ip)
        })
        .collect()
}

/// An error answer to `request`, signed with the request's key (RFC 8489 §9.2.4: an answer to an
/// authenticated request carries MESSAGE-INTEGRITY), with a fingerprint.
fn answer(request: &Message, code: ErrorCode, key: Vec<u8>) -> Option<Vec<u8>> {
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.clone()),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(code),
        Box::new(MessageIntegrity(key)),
        Box::new(FINGERPRINT),
    ];
    let mut message = Message::new();
    message.build(&setters).ok()?;
    Some(message.raw)
}

/// 401 Unauthorized to `request`, with its realm and nonce (so the client may try again with
/// other credentials), unsigned: its credentials are the ones that failed.
fn challenge(request: &Message) -> Option<Vec<u8>> {
    let realm = TextAttribute::get_from_as(request, ATTR_REALM).ok()?;
    let nonce = TextAttribute::get_from_as(request, ATTR_NONCE).ok()?;
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(request.clone()),
        Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(CODE_UNAUTHORIZED),
        Box::new(realm),
        Box::new(nonce),
        Box::new(FINGERPRINT),
    ];
    let mut message = Message::new();
    message.build(&setters).ok()?;
    Some(message.raw)
}

/// A listening `Conn` of the `turn` server, behind the [`Guard`].
pub(crate) struct GuardedConn {
    pub(crate) inner: Arc<dyn Conn + Send + Sync>,
    pub(crate) guard: Arc<Guard>,
}

#[async_trait]
impl Conn for GuardedConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        Ok(self.recv_from(buf).await?.0)
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (len, from) = self.inner.recv_from(buf).await?;
            match self.guard.inspect(&buf[..len], from) {
                Verdict::Pass => return Ok((len, from)),
                Verdict::Drop => {}
                Verdict::Answer(answer) => {
                    let _ = self.inner.send_to(&answer, from).await;
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        match self.guard.observe(buf) {
            Some(instead) => {
                self.inner.send_to(&instead, target).await?;
                Ok(buf.len())
            }
            None => self.inner.send_to(buf, target).await,
        }
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
