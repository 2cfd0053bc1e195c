//! Id newtypes. Both are URL-safe base64 strings without padding, so they can travel in links,
//! JSON and logs without escaping.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The id does not have the length its kind requires.
    #[error("a {kind} id has {expected} characters, this one has {got}")]
    Length {
        /// Which kind of id.
        kind: &'static str,
        /// The required length.
        expected: usize,
        /// The length found.
        got: usize,
    },
    /// The id has a character outside `A-Z a-z 0-9 - _`.
    #[error("a {kind} id may only hold A-Z, a-z, 0-9, '-' and '_'")]
    Alphabet {
        /// Which kind of id.
        kind: &'static str,
    },
}

fn check(kind: &'static str, expected: usize, s: &str) -> Result<(), IdError> {
    if s.len() != expected {
        return Err(IdError::Length { kind, expected, got: s.chars().count() });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(IdError::Alphabet { kind });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $bytes:literal, $chars:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Number of random bytes behind an id of this kind.
            pub const BYTES: usize = $bytes;
            /// Length of the id's text form.
            pub const CHARS: usize = $chars;

            /// Parses and validates an id.
            pub fn parse(s: &str) -> Result<Self, IdError> {
                check($kind, $chars, s)?;
                Ok(Self(s.to_owned()))
            }

            /// The id's text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                check($kind, $chars, &s)?;
                Ok(Self(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }
    };
}

id_type!(
    /// A room: 128 random bits, 22 characters of URL-safe base64.
    RoomId,
    "room",
    16,
    22
);

id_type!(
    /// A participant within a room: 64 random bits, 11 characters of URL-safe base64. Stable
    /// across a resume, new for every join.
    PeerId,
    "peer",
    8,
    11
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_check_length_and_alphabet() {
        assert!(RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").is_ok());
        assert!(matches!(RoomId::parse("short"), Err(IdError::Length { got: 5, .. })));
        assert!(matches!(RoomId::parse("AAAAAAAAAAAAAAAAAAAAA/"), Err(IdError::Alphabet { .. })));
        assert!(PeerId::parse("abc-_012345").is_ok());
        assert!(PeerId::parse("abc-_01234é").is_err());
    }

    #[test]
    fn ids_round_trip_through_json() {
        let id = PeerId::parse("abc-_012345").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, "\"abc-_012345\"");
        assert_eq!(serde_json::from_str::<PeerId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<PeerId>("\"x\"").is_err());
    }
}
