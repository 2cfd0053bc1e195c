//! Invite and resume tokens: signed by the relay (HMAC-SHA256), scoped, expiring.
//!
//! A token is `base64url(claims) "." base64url(mac)`. Claims are a compact binary record whose
//! first byte says which kind of token it is, so an invite can never pass for a resume token or
//! the other way round. Clients treat tokens as opaque strings.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use confer_proto::{PeerId, Role, RoomId};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const KIND_INVITE: u8 = 1;
const KIND_RESUME: u8 = 2;
const FLAG_WAITING_ROOM: u8 = 1;

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token this relay signed (malformed, forged, or of another kind).
    #[error("the token is not valid")]
    Invalid,
    /// Signed by this relay, but expired.
    #[error("the token has expired")]
    Expired,
}

/// The secret that signs tokens. Keep it for as long as links must stay valid.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

impl TokenKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: [u8; 32]) -> Self {
        Self(secret)
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(rand::random())
    }

    /// The key's bytes, for persisting it.
    pub fn secret(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    fn sign(&self, claims: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(claims);
        let tag = mac.finalize().into_bytes();
        format!("{}.{}", B64.encode(claims), B64.encode(tag))
    }

    /// Checks the signature (in constant time) and returns the claims.
    fn open(&self, token: &str) -> Result<Vec<u8>, TokenError> {
        let (claims, tag) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let claims = B64.decode(claims).map_err(|_| TokenError::Invalid)?;
        let tag = B64.decode(tag).map_err(|_| TokenError::Invalid)?;
        let mut mac = self.mac();
        mac.update(&claims);
        mac.verify_slice(&tag).map_err(|_| TokenError::Invalid)?;
        Ok(claims)
    }
}

/// What an invite token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteClaims {
    /// The room it opens.
    pub room: RoomId,
    /// Host or guest.
    pub role: Role,
    /// Whether guests knock even when the room is unlocked.
    pub waiting_room: bool,
    /// Unix seconds after which it no longer works.
    pub expires: u64,
}

/// What a resume token restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeClaims {
    /// The room.
    pub room: RoomId,
    /// The seat.
    pub peer: PeerId,
    /// The seat's role.
    pub role: Role,
    /// Unix milliseconds when it was issued.
    pub issued_ms: u64,
    /// Unix seconds after which it no longer works.
    pub expires: u64,
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_now_ms() / 1000
}

/// Milliseconds since the Unix epoch.
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Host => b'h',
        Role::Guest => b'g',
    }
}

fn byte_role(b: u8) -> Result<Role, TokenError> {
    match b {
        b'h' => Ok(Role::Host),
        b'g' => Ok(Role::Guest),
        _ => Err(TokenError::Invalid),
    }
}

/// Reads fixed-size fields off the front of the claims.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TokenError> {
        if self.0.len() < n {
            return Err(TokenError::Invalid);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, TokenError> {
        Ok(self.take(1)?[0])
    }
    fn u64(&mut self) -> Result<u64, TokenError> {
        let bytes: [u8; 8] = self.take(8)?.try_into().map_err(|_| TokenError::Invalid)?;
        Ok(u64::from_be_bytes(bytes))
    }
    fn id<T: TryFrom<String>>(&mut self, raw_len: usize) -> Result<T, TokenError> {
        T::try_from(B64.encode(self.take(raw_len)?)).map_err(|_| TokenError::Invalid)
    }
    fn done(&self) -> Result<(), TokenError> {
        if self.0.is_empty() { Ok(()) } else { Err(TokenError::Invalid) }
    }
}

fn id_bytes(id: &str, len: usize) -> Vec<u8> {
    // Ids are always the base64 form of `len` bytes; see `confer_proto::ids`.
    let mut bytes = B64.decode(id).unwrap_or_default();
    bytes.resize(len, 0);
    bytes
}

impl InviteClaims {
    /// Signs the claims into a token.
    pub fn sign(&self, key: &TokenKey) -> String {
        let mut claims = vec![KIND_INVITE];
        claims.extend(id_bytes(self.room.as_str(), RoomId::BYTES));
        claims.push(role_byte(self.role));
        claims.push(if self.waiting_room { FLAG_WAITING_ROOM } else { 0 });
        claims.extend(self.expires.to_be_bytes());
        key.sign(&claims)
    }

    /// Checks a token's signature, kind and expiry at `now` (Unix seconds).
    pub fn verify(key: &TokenKey, token: &str, now: u64) -> Result<Self, TokenError> {
        let claims = key.open(token)?;
        let mut r = Reader(&claims);
        if r.byte()? != KIND_INVITE {
            return Err(TokenError::Invalid);
        }
        let room = r.id(RoomId::BYTES)?;
        let role = byte_role(r.byte()?)?;
        let waiting_room = r.byte()? & FLAG_WAITING_ROOM != 0;
        let expires = r.u64()?;
        r.done()?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Self { room, role, waiting_room, expires })
    }
}

impl ResumeClaims {
    /// Claims for a seat, valid for `ttl` from `now_ms` (Unix milliseconds).
    pub fn new(room: RoomId, peer: PeerId, role: Role, now_ms: u64, ttl: Duration) -> Self {
        Self { room, peer, role, issued_ms: now_ms, expires: (now_ms / 1000).saturating_add(ttl.as_secs()) }
    }

    /// Signs the claims into a token.
    pub fn sign(&self, key: &TokenKey) -> String {
        let mut claims = vec![KIND_RESUME];
        claims.extend(id_bytes(self.room.as_str(), RoomId::BYTES));
        claims.extend(id_bytes(self.peer.as_str(), PeerId::BYTES));
        claims.push(role_byte(self.role));
        claims.extend(self.issued_ms.to_be_bytes());
        claims.extend(self.expires.to_be_bytes());
        key.sign(&claims)
    }

    /// Checks a token's signature, kind and expiry at `now` (Unix seconds).
    pub fn verify(key: &TokenKey, token: &str, now: u64) -> Result<Self, TokenError> {
        let claims = key.open(token)?;
        let mut r = Reader(&claims);
        if r.byte()? != KIND_RESUME {
            return Err(TokenError::Invalid);
        }
        let room = r.id(RoomId::BYTES)?;
        let peer = r.id(PeerId::BYTES)?;
        let role = byte_role(r.byte()?)?;
        let issued_ms = r.u64()?;
        let expires = r.u64()?;
        r.done()?;
        if now >= expires {
            return Err(TokenError::Expired);
        }
        Ok(Self { room, peer, role, issued_ms, expires })
    }
}

/// A fresh random room id (128 bits).
pub fn new_room_id() -> RoomId {
    let bytes: [u8; RoomId::BYTES] = rand::random();
    RoomId::try_from(B64.encode(bytes)).unwrap_or_else(|_| unreachable!("22 base64url characters"))
}

/// A fresh random peer id (64 bits).
pub fn new_peer_id() -> PeerId {
    let bytes: [u8; PeerId::BYTES] = rand::random();
    PeerId::try_from(B64.encode(bytes)).unwrap_or_else(|_| unreachable!("11 base64url characters"))
}

/// The embedded TURN server's shared secret, derived from the token key (HMAC-SHA256 of a fixed
/// label, as hex): the relay both signs and checks TURN credentials, and a restart with the same
/// state keeps the credentials it handed out valid.
pub fn turn_secret(key: &TokenKey) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.secret())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"confer embedded TURN secret v1");
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invite(role: Role) -> InviteClaims {
        InviteClaims { room: new_room_id(), role, waiting_room: true, expires: 1_000 }
    }

    #[test]
    fn invite_round_trips_and_expires() {
        let key = TokenKey::generate();
        let claims = invite(Role::Host);
        let token = claims.sign(&key);
        assert_eq!(InviteClaims::verify(&key, &token, 999), Ok(claims));
        assert_eq!(InviteClaims::verify(&key, &token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn forged_and_foreign_tokens_are_invalid() {
        let key = TokenKey::generate();
        let token = invite(Role::Guest).sign(&key);
        assert_eq!(InviteClaims::verify(&TokenKey::generate(), &token, 0), Err(TokenError::Invalid));
        // Flip the role inside the claims: the MAC no longer matches.
        let (claims, tag) = token.split_once('.').unwrap();
        let mut raw = B64.decode(claims).unwrap();
        raw[17] = b'h';
        let forged = format!("{}.{tag}", B64.encode(raw));
        assert_eq!(InviteClaims::verify(&key, &forged, 0), Err(TokenError::Invalid));
        for junk in ["", ".", "a.b", "....", "é.é"] {
            assert_eq!(InviteClaims::verify(&key, junk, 0), Err(TokenError::Invalid));
        }
    }

    #[test]
    fn kinds_do_not_mix() {
        let key = TokenKey::generate();
        let resume =
            ResumeClaims::new(new_room_id(), new_peer_id(), Role::Guest, 10, Duration::from_secs(60));
        let token = resume.sign(&key);
        assert_eq!(ResumeClaims::verify(&key, &token, 11), Ok(resume));
        assert_eq!(InviteClaims::verify(&key, &token, 11), Err(TokenError::Invalid));
        let invite = invite(Role::Guest).sign(&key);
        assert_eq!(ResumeClaims::verify(&key, &invite, 11), Err(TokenError::Invalid));
    }
}
