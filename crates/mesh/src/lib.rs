//! Confer's call engine ([`engine`]): the signaling client ([`signaling`]), the certificate
//! pinning it shares with everything that talks to a relay ([`tls`]), what peers say on their
//! data channels ([`data`]), the engine's decisions in an IO-free form tested in fake time
//! ([`decide`]), and one WebRTC peer connection per remote participant (behind one module).

pub mod call;
pub mod data;
pub mod decide;
mod decode;
pub mod engine;
pub mod files;
pub mod ice;
pub mod layers;
pub mod netcheck;
pub mod nopath;
mod peer;
mod probe;
pub mod queues;
mod record;
pub mod rooms;
pub mod share;
pub mod signaling;
pub mod tls;
mod turn_probe;
pub mod voice;

pub use confer_turn_stream::RelayTransport;
pub use peer::{CandidateType, Path};
