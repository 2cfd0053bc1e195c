//! Every queue between the engine's task, its threads, the WebRTC stack and the app, with its
//! capacity and what happens when it is full. Nothing the peers, the relay or a slow app does can
//! make the engine hold more than these.
//!
//! | Queue | From → to | Capacity | When full |
//! |---|---|---|---|
//! | encoded media | capture threads → engine | [`ENCODED`] | video: once half full, pictures are not encoded (a skipped picture breaks nothing; if one encoded is dropped all the same, its layers start again with a keyframe); audio waits, and the microphone's own queue drops while it does |
//! | peers' input | read loops, data channels, RTCP → engine | [`REMOTE`] | media: the reader waits, so RTP backs up into the stack's receive buffer (which drops, and loss recovery asks again); data channel messages and what RTCP says: dropped and logged (a waiting data channel would close the peer's SCTP window and stall its sends, to us and, through its engine, to its other peers; unread RTCP would stop retransmissions) |
//! | stack state | the stack's callbacks → engine | [`STACK`] | dropped and logged: callbacks may hold the connection's locks, so they never wait; they are a few per connection per ICE restart |
//! | file transfers | transfer tasks → engine | [`FILE_EVENTS`] | the transfer waits |
//! | relay's messages | signaling client → engine | [`SIGNALING`] | the connection is dropped and resumed at once (the relay replays the signals after the last one taken; presence comes with the resume): a client waiting for room would neither send our signals nor answer the relay's pings |
//! | app's commands | [`crate::engine::EngineHandle`] → engine | [`COMMANDS`] | dropped and logged (leaving is not a queued command: it always gets through) |
//! | pictures | engine → app: frames, self view, levels, statistics | [`PICTURE_EVENTS`] | dropped and counted: a newer one follows |
//! | state | engine → app: everything else | [`STATE_EVENTS`] | dropped and logged as an error: an app that far behind has stopped reading, and the call does not stall for it |
//!
//! Elsewhere: a screen share's access units ([`crate::share`], newest dropped), each remote
//! stream's decoder ([`crate::decode`]: units dropped and a keyframe asked for; decoded pictures
//! dropped and counted).
//!
//! One queue is left unbounded on purpose: the engine's messages to the relay, which are the
//! engine's own output (bounded by what it does per input, and by the relay's rate limit), and
//! must not be lost or stall the call when the relay's connection is slow.

/// Encoded media from the capture threads: about six seconds of audio and video. A bound for a
/// stalled engine, not a shaper: an engine that is merely busy (eight debug builds on two cores)
/// must not see its capture skip pictures, which made latency worse in measurement (64 here:
/// pictures arrived 0.6–4 s after capture in the 8-party test, against 0.2–0.4 s).
pub(crate) const ENCODED: usize = 512;

/// What peers send: media, data channel messages, RTCP: about seven seconds of audio and video
/// from seven peers.
pub(crate) const REMOTE: usize = 4096;

/// The stack's own state changes and our candidates, for all peers.
pub(crate) const STACK: usize = 1024;

/// File transfer progress and results.
pub(crate) const FILE_EVENTS: usize = 64;

/// Relay messages not yet handled.
pub(crate) const SIGNALING: usize = 256;

/// App commands not yet handled.
pub(crate) const COMMANDS: usize = 256;

/// Frames, levels and statistics not yet taken by the app: a few frames' worth.
pub const PICTURE_EVENTS: usize = 16;

/// Other events not yet taken by the app.
pub const STATE_EVENTS: usize = 4096;
