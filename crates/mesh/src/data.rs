//! What peers say to each other on their data channel (docs/PROTOCOL.md, section 10): chat, and
//! their own state (mute, camera, hand), which must not wait on the relay. One JSON object per
//! text message. What arrives is untrusted: it is size-checked, and anything that is not a
//! message of this version is refused with a reason and changes nothing.

use serde::{Deserialize, Serialize};

/// The largest data-channel message taken, in bytes: room for the longest chat even when every
/// character needs escaping (6 bytes), and well under the 64 KiB that stacks assume when the SDP
/// names no `max-message-size` (a larger message may close the channel in some of them).
pub const MAX_MESSAGE: usize = 32 * 1024;
/// The longest chat message, in characters.
pub const MAX_CHAT: usize = 4_000;
/// The reactions a participant can send (each floats on the sender's tile for a moment).
pub const REACTIONS: [&str; 6] = ["👍", "👏", "😂", "❤️", "🎉", "😮"];

/// One data-channel message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PeerMessage {
    /// A chat message to this peer (sent to each peer for a message to everyone).
    Chat {
        /// The text, 1 to 4,000 characters.
        text: String,
    },
    /// A reaction to what is going on: one of [`REACTIONS`].
    Reaction {
        /// The emoji.
        emoji: String,
    },
    /// The sender's own state as it is now (sent when the channel opens and on every change).
    State {
        /// Microphone off.
        muted: bool,
        /// Camera on.
        camera: bool,
        /// Hand raised.
        hand_raised: bool,
    },
    /// What the sender shows our camera in, in device pixels (`0` by `0`: not shown, off screen
    /// or minimised): we send it the smallest layer that fills it, or no video at all (audio
    /// goes on). Sent when the tile's size changes; a peer that never sends it gets the largest
    /// layer its link carries.
    View {
        /// The tile's width, 0 to [`MAX_VIEW`].
        width: u32,
        /// The tile's height, 0 to [`MAX_VIEW`].
        height: u32,
    },
}

/// The largest tile side a `view` may give, pixels (an 8K screen is 7,680 wide).
pub const MAX_VIEW: u32 = 16_384;

/// Why a data-channel message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataError {
    /// Longer than [`MAX_MESSAGE`].
    #[error("message of {0} bytes is over the {MAX_MESSAGE}-byte limit")]
    TooLarge(usize),
    /// Not a message of this version (bad JSON, unknown type, missing field).
    #[error("not a peer message: {0}")]
    Invalid(String),
    /// A chat message that is empty, only white space, or longer than [`MAX_CHAT`] characters.
    #[error("chat text must be 1 to {MAX_CHAT} characters, not only white space")]
    ChatLength,
    /// A `view` with a side over [`MAX_VIEW`], or one side 0 and not the other.
    #[error("a view is 0x0 or 1 to {MAX_VIEW} pixels a side")]
    ViewSize,
    /// A reaction that is not one of [`REACTIONS`].
    #[error("not a reaction Confer knows (one of 👍 👏 😂 ❤️ 🎉 😮)")]
    UnknownReaction,
}

/// A reaction is one of [`REACTIONS`].
pub fn check_reaction(emoji: &str) -> Result<(), DataError> {
    if REACTIONS.contains(&emoji) { Ok(()) } else { Err(DataError::UnknownReaction) }
}

/// A chat text is 1 to [`MAX_CHAT`] characters and not only white space.
pub fn check_chat(text: &str) -> Result<(), DataError> {
    if text.trim().is_empty() || text.chars().count() > MAX_CHAT {
        return Err(DataError::ChatLength);
    }
    Ok(())
}

impl PeerMessage {
    /// Reads one data-channel message.
    pub fn decode(text: &str) -> Result<Self, DataError> {
        if text.len() > MAX_MESSAGE {
            return Err(DataError::TooLarge(text.len()));
        }
        let message: Self = serde_json::from_str(text).map_err(|e| DataError::Invalid(e.to_string()))?;
        match &message {
            Self::Chat { text } => check_chat(text)?,
            Self::Reaction { emoji } => check_reaction(emoji)?,
            Self::State { .. } => {}
            Self::View { width, height } => {
                if *width > MAX_VIEW || *height > MAX_VIEW || ((*width == 0) != (*height == 0)) {
                    return Err(DataError::ViewSize);
                }
            }
        }
        Ok(message)
    }

    /// The message as sent.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn messages_read_back_as_sent() {
        for message in [
            PeerMessage::Chat { text: "héllo \"there\"\n".into() },
            PeerMessage::State { muted: true, camera: false, hand_raised: true },
            PeerMessage::Reaction { emoji: "🎉".into() },
        ] {
            assert_eq!(PeerMessage::decode(&message.encode()), Ok(message));
        }
        // The documented form (what a browser sends).
        assert_eq!(
            PeerMessage::decode(
                r#"{"type":"state","muted":false,"camera":true,"hand_raised":false,"extra":1}"#
            ),
            Ok(PeerMessage::State { muted: false, camera: true, hand_raised: false })
        );
    }

    #[test]
    fn bad_messages_are_refused_with_a_reason() {
        assert_eq!(
            PeerMessage::decode(r#"{"type":"reaction","emoji":"💩"}"#),
            Err(DataError::UnknownReaction)
        );
        assert_eq!(
            PeerMessage::decode(r#"{"type":"reaction","emoji":"👍👍"}"#),
            Err(DataError::UnknownReaction)
        );
        assert!(matches!(PeerMessage::decode("chat:hi"), Err(DataError::Invalid(_))));
        assert!(matches!(PeerMessage::decode(r#"{"type":"dance"}"#), Err(DataError::Invalid(_))));
        assert_eq!(
            PeerMessage::decode(r#"{"type":"view","width":320,"height":180}"#),
            Ok(PeerMessage::View { width: 320, height: 180 })
        );
        assert_eq!(
            PeerMessage::decode(r#"{"type":"view","width":0,"height":0}"#),
            Ok(PeerMessage::View { width: 0, height: 0 })
        );
        assert_eq!(
            PeerMessage::decode(r#"{"type":"view","width":99999,"height":9}"#),
            Err(DataError::ViewSize)
        );
        assert_eq!(PeerMessage::decode(r#"{"type":"view","width":0,"height":9}"#), Err(DataError::ViewSize));
        assert!(matches!(
            PeerMessage::decode(r#"{"type":"view","width":-1,"height":9}"#),
            Err(DataError::Invalid(_))
        ));
        assert!(matches!(
            PeerMessage::decode(r#"{"type":"state","muted":true}"#),
            Err(DataError::Invalid(_))
        ));
        assert_eq!(PeerMessage::decode(r#"{"type":"chat","text":"  "}"#), Err(DataError::ChatLength));
        let long = PeerMessage::Chat { text: "é".repeat(MAX_CHAT + 1) }.encode();
        assert_eq!(PeerMessage::decode(&long), Err(DataError::ChatLength));
        let huge = format!(r#"{{"type":"chat","text":"{}"}}"#, "a".repeat(MAX_MESSAGE));
        assert!(matches!(PeerMessage::decode(&huge), Err(DataError::TooLarge(_))));
        // The longest chat fits the limit even when every character is escaped.
        let escaped = PeerMessage::Chat { text: "\u{1}".repeat(MAX_CHAT) }.encode();
        assert!(escaped.len() <= MAX_MESSAGE, "{} bytes", escaped.len());
        assert!(PeerMessage::decode(&escaped).is_ok());
    }

    proptest! {
        #[test]
        fn any_text_is_read_or_refused_never_a_panic(text in ".{0,200}") {
            let _ = PeerMessage::decode(&text);
        }
    }
}
