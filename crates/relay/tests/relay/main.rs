//! The relay as users meet it: the real `confer-relay` binary, over real WSS sockets on
//! loopback, driven by clients that speak docs/PROTOCOL.md.
#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

/// Declares test `$test` (an `async fn $test(relay: &Relays)` next to it) twice: against one relay,
/// and against three relays sharing rooms through a real Redis, with each connection on the next
/// instance. What holds against one instance (hostile input refused, tokens honoured only for their
/// room and role) must hold when the other side of the room sits on another instance.
macro_rules! on_one_relay_and_on_three {
    ($test:ident $(, $flag:expr)*) => {
        mod $test {
            #[tokio::test]
            async fn one_relay() {
                super::$test(&crate::support::Relays::one(&[$($flag),*]).await).await;
            }

            #[tokio::test]
            async fn three_relays_sharing_rooms() {
                super::$test(&crate::support::Relays::three(&[$($flag),*]).await).await;
            }
        }
    };
}

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
