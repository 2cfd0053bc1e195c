//! Confer's call engine. So far: the signaling client ([`signaling`]), the certificate pinning
//! it shares with everything that talks to a relay ([`tls`]), and the engine's decisions in an
//! IO-free form tested in fake time ([`decide`]). Peer connections come next.

pub mod decide;
pub mod engine;
mod peer;
pub mod rooms;
pub mod signaling;
pub mod tls;

pub use peer::CandidateType;
