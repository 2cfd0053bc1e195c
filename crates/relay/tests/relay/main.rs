//! The relay as users meet it: the real `confer-relay` binary, over real WSS sockets on
//! loopback, driven by clients that speak docs/PROTOCOL.md.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

mod config;
mod host_controls;
mod limits;
mod malformed;
mod membership;
mod operations;
mod resume;
mod scale_out;
mod signaling;
mod support;
mod tokens;
mod transport;
mod turn;
