//! Confer's signaling relay: the server that introduces the participants of a call.
//!
//! It owns rooms (who is in, who knocks, who hosts), invite and resume tokens, presence, the
//! forwarding of offers, answers and ICE candidates between members of the same room, the
//! limits that keep it alive under abuse, ephemeral TURN credentials, health and metrics.
//! It never sees media: audio and video go peer to peer (or through TURN).
//!
//! A library plus a thin binary: [`Relay::bind`] with a [`RelayConfig`], then [`Relay::run`].

mod bus;
mod cluster;
mod config;
mod conn;
mod http;
mod metrics;
mod rate;
mod room;
mod rooms;
mod server;
mod state;
pub mod stun_turn;
pub mod tls;
pub mod token;
pub mod turn;
mod turn_guard;

pub use config::{RedisUrl, RelayConfig, RoomCreation, TlsSetup};
pub use server::{Relay, RelayError, RelayHandle};
pub use state::{LinkPair, RoomLinks};
pub use stun_turn::{EmbeddedTurnConfig, IpRange};
pub use turn_guard::Quotas;
