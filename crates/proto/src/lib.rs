//! Confer's signaling wire format: the messages a Confer client and the relay exchange over
//! WebSocket, the ids they carry, the error codes, the invite link format, and the validation
//! every message goes through.
//!
//! This crate does no IO. It owns the shape of the protocol (specified for humans in
//! `docs/PROTOCOL.md`); it does not own what the relay decides with those messages (room
//! membership, tokens, limits on rates), nor how a client drives a call.

mod error;
mod ice_url;
mod ids;
mod link;
mod message;
mod validate;

pub use error::{ErrorCode, ProtoError};
pub use ice_url::{IceScheme, IceTransport, IceUrl, IceUrlError, MAX_URL_BYTES as MAX_ICE_URL_BYTES};
pub use ids::{IdError, PeerId, RoomId};
pub use link::{Fingerprint, InviteLink, LinkError};
pub use message::{
    ClientMessage, IceServer, Knocker, LeaveReason, Participant, PeerState, Role, ServerMessage,
    SignalPayload,
};
pub use validate::{decode_client, decode_server};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The WebSocket subprotocol a client must offer (`Sec-WebSocket-Protocol`) to speak
/// [`PROTOCOL_VERSION`]. The relay refuses an upgrade that offers no version it speaks.
pub const SUBPROTOCOL: &str = "confer.v1";

/// The path of the WebSocket endpoint on a relay.
pub const WS_PATH: &str = "/ws";

/// Size limits every message is checked against. They are part of the protocol: a client that
/// stays within them is never refused for size.
pub mod limits {
    /// A whole message (one WebSocket text message), in bytes.
    pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;
    /// A display name, in characters (Unicode scalar values), after trimming.
    pub const MAX_NAME_CHARS: usize = 64;
    /// An SDP offer or answer, in bytes.
    pub const MAX_SDP_BYTES: usize = 64 * 1024;
    /// One ICE candidate line, in bytes.
    pub const MAX_CANDIDATE_BYTES: usize = 1024;
    /// A media stream identification tag (`sdp_mid`), in bytes.
    pub const MAX_MID_BYTES: usize = 64;
    /// An ICE username fragment, in bytes.
    pub const MAX_UFRAG_BYTES: usize = 256;
    /// An end-to-end sealed signal (`sealed` payload `data`), in bytes.
    pub const MAX_SEALED_BYTES: usize = 96 * 1024;
    /// An invite or resume token, in bytes.
    pub const MAX_TOKEN_BYTES: usize = 512;
}
