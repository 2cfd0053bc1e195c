//! Error codes: the stable names a client branches on, and the close code that goes with each
//! one that ends a connection.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $close:literal; )*) => {
        /// Every error the relay reports, on the wire as its snake_case name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// All codes, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code's wire name.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $name,)* }
            }

            /// The WebSocket close code used when this error ends a connection.
            pub fn close_code(self) -> u16 {
                match self { $(ErrorCode::$variant => $close,)* }
            }

            /// The code with this wire name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($name => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The text is not JSON.
    MalformedJson = "malformed_json", 4000;
    /// The `type` is not one this protocol version knows.
    UnknownType = "unknown_type", 4001;
    /// A field is missing, of the wrong type, or not a valid value (an id, say).
    InvalidMessage = "invalid_message", 4002;
    /// A field is longer than its limit, or a name is empty.
    FieldTooLong = "field_too_long", 4003;
    /// A binary WebSocket message; the protocol is text only.
    BinaryNotSupported = "binary_not_supported", 4004;
    /// The message exceeds 128 KiB (the connection is closed with 1009).
    MessageTooLarge = "message_too_large", 1009;
    /// Too many messages; this one was dropped.
    RateLimited = "rate_limited", 4008;
    /// This message needs a seat, and the connection has none (yet).
    NotJoined = "not_joined", 4010;
    /// `join` or `resume` on a connection that already has a seat or is knocking.
    AlreadyJoined = "already_joined", 4011;
    /// The token is not one this relay signed.
    TokenInvalid = "token_invalid", 4401;
    /// The token's time is over.
    TokenExpired = "token_expired", 4402;
    /// The token is for another room than the one named.
    TokenWrongRoom = "token_wrong_room", 4403;
    /// The action needs the host role.
    RoleForbidden = "role_forbidden", 4404;
    /// The room holds its maximum number of participants.
    RoomFull = "room_full", 4409;
    /// No participant (or knocker) with that id in your room.
    PeerNotFound = "peer_not_found", 4410;
    /// A host turned your knock down.
    KnockDenied = "knock_denied", 4411;
    /// Nobody admitted you in time.
    KnockTimeout = "knock_timeout", 4412;
    /// A host removed you from the room.
    Removed = "removed", 4413;
    /// Another connection resumed your seat.
    Replaced = "replaced", 4414;
    /// Someone else shares a screen, and the room allows one share at a time.
    ShareTaken = "share_taken", 4416;
    /// The seat is gone (grace period over, removed, or left), or the resume token was replaced
    /// by newer ones.
    ResumeFailed = "resume_failed", 4415;
    /// No `join` or `resume` within 10 s of connecting.
    AuthTimeout = "auth_timeout", 4420;
    /// Nothing heard from the client for 15 s.
    HeartbeatTimeout = "heartbeat_timeout", 4421;
    /// The client did not read its messages fast enough (256 messages or 2 MiB queued).
    SlowConsumer = "slow_consumer", 4422;
    /// Too many connections from one address (HTTP 429 at the upgrade).
    TooManyConnections = "too_many_connections", 4429;
    /// No offered subprotocol is one this relay speaks (HTTP 400 at the upgrade).
    UnsupportedProtocol = "unsupported_protocol", 4426;
    /// The relay is shutting down: reconnect and resume.
    ShuttingDown = "shutting_down", 1012;
    /// The relay holds as many rooms as it may: try again later.
    RelayBusy = "relay_busy", 1013;
    /// A fault inside the relay.
    Internal = "internal", 1011;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a message was refused: its [`ErrorCode`] and a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ProtoError {
    /// The code that goes on the wire.
    pub code: ErrorCode,
    /// What exactly was wrong.
    pub detail: String,
}

impl ProtoError {
    /// A new error.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self { code, detail: detail.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_close_codes_are_distinct() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_name(code.as_str()), Some(code));
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert!(seen.insert(code.close_code()), "duplicate close code for {code}");
            let close = code.close_code();
            assert!((4000..5000).contains(&close) || [1009, 1011, 1012, 1013].contains(&close));
        }
    }
}
