//! Decoding and validation, in one place: every message from the network goes through
//! [`decode_client`] (relay side) or [`decode_server`] (client side).

use serde::Deserialize;

use crate::{ClientMessage, ErrorCode, ProtoError, ServerMessage, SignalPayload, limits};

/// The `type` tags of [`ClientMessage`].
const CLIENT_TYPES: &[&str] = &[
    "join",
    "resume",
    "signal",
    "update",
    "share",
    "record",
    "stop_share",
    "share_policy",
    "lock",
    "unlock",
    "admit",
    "deny",
    "remove",
    "ping",
    "leave",
];

/// Decodes and validates one message from a client. The error says which documented code
/// applies; nothing the input holds can make this panic.
pub fn decode_client(text: &str) -> Result<ClientMessage, ProtoError> {
    if text.len() > limits::MAX_MESSAGE_BYTES {
        return Err(too_long("message", limits::MAX_MESSAGE_BYTES, text.len()));
    }
    let msg: ClientMessage = serde_json::from_str(text).map_err(|e| classify(text, &e))?;
    validate_client(&msg)?;
    Ok(msg)
}

/// Decodes one message from the relay, with the same classification of errors.
pub fn decode_server(text: &str) -> Result<ServerMessage, ProtoError> {
    serde_json::from_str(text).map_err(|e| classify(text, &e))
}

/// Tells a syntax error from an unknown type from a bad field.
fn classify(text: &str, err: &serde_json::Error) -> ProtoError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            return ProtoError::new(ErrorCode::MalformedJson, "the message is not valid JSON");
        }
        Category::Data => {}
    }
    #[derive(Deserialize)]
    struct TypeOnly {
        #[serde(rename = "type")]
        ty: Option<serde_json::Value>,
    }
    match serde_json::from_str::<TypeOnly>(text) {
        Ok(TypeOnly { ty: None }) => ProtoError::new(ErrorCode::InvalidMessage, "missing field `type`"),
        Ok(TypeOnly { ty: Some(serde_json::Value::String(ty)) }) if !CLIENT_TYPES.contains(&ty.as_str()) => {
            let shown: String = ty.chars().take(32).collect();
            ProtoError::new(ErrorCode::UnknownType, format!("unknown message type `{shown}`"))
        }
        Ok(TypeOnly { ty: Some(serde_json::Value::String(_)) }) => {
            ProtoError::new(ErrorCode::InvalidMessage, strip_position(&err.to_string()))
        }
        Ok(TypeOnly { ty: Some(_) }) => {
            ProtoError::new(ErrorCode::InvalidMessage, "field `type` must be a string")
        }
        // Not an object at all (an array, a number...).
        Err(_) => ProtoError::new(ErrorCode::InvalidMessage, "a message must be a JSON object"),
    }
}

/// serde_json appends " at line L column C"; the position means nothing to a peer.
fn strip_position(message: &str) -> String {
    let cut = message.find(" at line ").unwrap_or(message.len());
    let mut out: String = message[..cut].chars().take(200).collect();
    if out.is_empty() {
        out.push_str("invalid message");
    }
    out
}

fn too_long(field: &str, limit: usize, got: usize) -> ProtoError {
    ProtoError::new(ErrorCode::FieldTooLong, format!("`{field}` is {got} bytes, the limit is {limit}"))
}

fn check_len(field: &str, value: &str, limit: usize) -> Result<(), ProtoError> {
    if value.len() > limit { Err(too_long(field, limit, value.len())) } else { Ok(()) }
}

/// A display name: 1 to 64 characters after trimming, no control characters.
pub(crate) fn check_name(name: &str) -> Result<(), ProtoError> {
    let trimmed = name.trim();
    let chars = trimmed.chars().count();
    if chars == 0 {
        return Err(ProtoError::new(ErrorCode::FieldTooLong, "`name` must not be empty"));
    }
    if chars > limits::MAX_NAME_CHARS || name.len() > 4 * limits::MAX_NAME_CHARS {
        return Err(ProtoError::new(
            ErrorCode::FieldTooLong,
            format!("`name` is {chars} characters, the limit is {}", limits::MAX_NAME_CHARS),
        ));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(ProtoError::new(ErrorCode::InvalidMessage, "`name` must not hold control characters"));
    }
    Ok(())
}

fn validate_client(msg: &ClientMessage) -> Result<(), ProtoError> {
    match msg {
        ClientMessage::Join { token, name, .. } => {
            check_len("token", token, limits::MAX_TOKEN_BYTES)?;
            check_name(name)
        }
        ClientMessage::Resume { token, name, .. } => {
            check_len("token", token, limits::MAX_TOKEN_BYTES)?;
            name.as_deref().map_or(Ok(()), check_name)
        }
        ClientMessage::Signal { payload, .. } => validate_payload(payload),
        ClientMessage::Update { name, .. } => name.as_deref().map_or(Ok(()), check_name),
        ClientMessage::Share { .. }
        | ClientMessage::Record { .. }
        | ClientMessage::StopShare { .. }
        | ClientMessage::SharePolicy { .. }
        | ClientMessage::Lock
        | ClientMessage::Unlock
        | ClientMessage::Admit { .. }
        | ClientMessage::Deny { .. }
        | ClientMessage::Remove { .. }
        | ClientMessage::Ping { .. }
        | ClientMessage::Leave => Ok(()),
    }
}

fn validate_payload(payload: &SignalPayload) -> Result<(), ProtoError> {
    match payload {
        SignalPayload::Offer { sdp } | SignalPayload::Answer { sdp } => {
            check_len("sdp", sdp, limits::MAX_SDP_BYTES)
        }
        SignalPayload::Candidate { candidate, sdp_mid, username_fragment, .. } => {
            check_len("candidate", candidate, limits::MAX_CANDIDATE_BYTES)?;
            check_len("sdp_mid", sdp_mid.as_deref().unwrap_or(""), limits::MAX_MID_BYTES)?;
            check_len(
                "username_fragment",
                username_fragment.as_deref().unwrap_or(""),
                limits::MAX_UFRAG_BYTES,
            )
        }
        SignalPayload::EndOfCandidates { username_fragment } => check_len(
            "username_fragment",
            username_fragment.as_deref().unwrap_or(""),
            limits::MAX_UFRAG_BYTES,
        ),
        SignalPayload::Sealed { data } => check_len("data", data, limits::MAX_SEALED_BYTES),
        SignalPayload::RestartIce => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode_client(text).unwrap_err().code
    }

    #[test]
    fn errors_are_classified() {
        assert_eq!(code("{not json"), ErrorCode::MalformedJson);
        assert_eq!(code(""), ErrorCode::MalformedJson);
        assert_eq!(code(r#"{"type":"teleport"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"name":"x"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":7}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"[1,2]"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"signal","to":"abcdefghijk"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"signal","to":"bad","payload":{"kind":"end_of_candidates"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"type":"ping","nonce":"seven"}"#), ErrorCode::InvalidMessage);
    }

    #[test]
    fn missing_field_is_named_without_position() {
        let err = decode_client(r#"{"type":"signal","to":"abcdefghijk"}"#).unwrap_err();
        assert!(err.detail.contains("payload"), "{}", err.detail);
        assert!(!err.detail.contains("line"), "{}", err.detail);
    }

    #[test]
    fn limits_are_enforced() {
        let sdp = "a".repeat(limits::MAX_SDP_BYTES + 1);
        let msg =
            format!(r#"{{"type":"signal","to":"abcdefghijk","payload":{{"kind":"offer","sdp":"{sdp}"}}}}"#);
        assert_eq!(code(&msg), ErrorCode::FieldTooLong);
        let ok = msg.replace(&sdp, &"a".repeat(limits::MAX_SDP_BYTES));
        assert!(decode_client(&ok).is_ok());

        let cand = "c".repeat(limits::MAX_CANDIDATE_BYTES + 1);
        let msg = format!(
            r#"{{"type":"signal","to":"abcdefghijk","payload":{{"kind":"candidate","candidate":"{cand}"}}}}"#
        );
        assert_eq!(code(&msg), ErrorCode::FieldTooLong);

        let join = |name: &str| {
            format!(r#"{{"type":"join","room":"AAAAAAAAAAAAAAAAAAAAAA","token":"t","name":"{name}"}}"#)
        };
        assert!(decode_client(&join(&"é".repeat(64))).is_ok());
        assert_eq!(code(&join(&"é".repeat(65))), ErrorCode::FieldTooLong);
        assert_eq!(code(&join("   ")), ErrorCode::FieldTooLong);
        assert_eq!(code(&join("a\\u0007b")), ErrorCode::InvalidMessage);

        let huge = format!("{{\"type\":\"ping\",\"pad\":\"{}\"}}", "x".repeat(limits::MAX_MESSAGE_BYTES));
        assert_eq!(code(&huge), ErrorCode::FieldTooLong);
    }

    #[test]
    fn unknown_payload_kind_is_an_invalid_message_not_an_unknown_type() {
        let text = r#"{"type":"signal","to":"abcdefghijk","payload":{"kind":"bogus"}}"#;
        assert_eq!(code(text), ErrorCode::InvalidMessage);
    }

    #[test]
    fn client_type_list_matches_the_enum() {
        use crate::{PeerId, RoomId};
        let peer = PeerId::parse("abcdefghijk").unwrap();
        let all = [
            ClientMessage::Join {
                room: RoomId::parse("AAAAAAAAAAAAAAAAAAAAAA").unwrap(),
                token: String::new(),
                name: String::new(),
                muted: false,
                camera: false,
            },
            ClientMessage::Resume {
                token: String::new(),
                last_seq: 0,
                name: None,
                muted: false,
                camera: false,
            },
            ClientMessage::Signal {
                to: peer.clone(),
                payload: SignalPayload::EndOfCandidates { username_fragment: None },
            },
            ClientMessage::Update { name: None, muted: None, camera: None, hand_raised: None },
            ClientMessage::Share { on: true },
            ClientMessage::Record { on: true },
            ClientMessage::StopShare { peer: peer.clone() },
            ClientMessage::SharePolicy { several: true },
            ClientMessage::Lock,
            ClientMessage::Unlock,
            ClientMessage::Admit { peer: peer.clone() },
            ClientMessage::Deny { peer: peer.clone() },
            ClientMessage::Remove { peer },
            ClientMessage::Ping { nonce: 0 },
            ClientMessage::Leave,
        ];
        let tags: Vec<String> = all
            .iter()
            .map(|m| serde_json::to_value(m).unwrap()["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(tags, CLIENT_TYPES);
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let msg = decode_client(r#"{"type":"ping","nonce":3,"future":true}"#).unwrap();
        assert_eq!(msg, ClientMessage::Ping { nonce: 3 });
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = decode_client(&text);
            let _ = decode_server(&text);
        }

        #[test]
        fn json_shaped_noise_never_panics(
            ty in prop::sample::select(vec!["join","resume","signal","update","admit","ping","leave","x"]),
            key in "[a-z_]{1,12}",
            value in prop_oneof![Just("null".to_owned()), Just("[]".to_owned()), "-?[0-9]{1,25}", "\"[^\"\\\\]{0,40}\""],
        ) {
            let text = format!(r#"{{"type":"{ty}","{key}":{value}}}"#);
            let _ = decode_client(&text);
        }
    }
}
