//! docs/PROTOCOL.md is the spec another team implements from: every example in it must decode
//! with the real wire types, every message type must have an example, and every error code must
//! be in its table with the close code the relay really uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use confer_proto::{ErrorCode, decode_client, decode_server};

const DOC: &str = include_str!("../../../docs/PROTOCOL.md");

/// The fenced blocks tagged `json client` / `json server`.
fn examples(side: &str) -> Vec<&'static str> {
    let fence = format!("```json {side}\n");
    DOC.split(fence.as_str()).skip(1).map(|rest| rest.split("\n```").next().unwrap().trim()).collect()
}

fn type_of(example: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(example).unwrap();
    value["type"].as_str().unwrap().to_owned()
}

#[test]
fn every_client_example_decodes_and_every_client_type_has_one() {
    let examples = examples("client");
    assert!(examples.len() >= 14);
    for example in &examples {
        decode_client(example).unwrap_or_else(|e| panic!("{e}: {example}"));
    }
    let types: BTreeSet<String> = examples.iter().map(|e| type_of(e)).collect();
    let expected = [
        "join",
        "resume",
        "signal",
        "update",
        "share",
        "stop_share",
        "share_policy",
        "record",
        "lock",
        "unlock",
        "admit",
        "deny",
        "remove",
        "leave",
        "ping",
    ];
    assert_eq!(types, expected.iter().map(|s| (*s).to_owned()).collect());
}

#[test]
fn every_server_example_decodes_and_every_server_type_has_one() {
    let examples = examples("server");
    for example in &examples {
        decode_server(example).unwrap_or_else(|e| panic!("{e}: {example}"));
    }
    let types: BTreeSet<String> = examples.iter().map(|e| type_of(e)).collect();
    let expected = [
        "joined",
        "knocking",
        "knock",
        "knock_ended",
        "resumed",
        "peer_joined",
        "peer_left",
        "peer_reconnecting",
        "peer_resumed",
        "peer_updated",
        "signal",
        "room_locked",
        "share_policy",
        "pong",
        "reconnect",
        "error",
    ];
    assert_eq!(types, expected.iter().map(|s| (*s).to_owned()).collect());
}

#[test]
fn every_error_code_is_documented_with_its_close_code() {
    for code in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", code.as_str(), code.close_code());
        assert!(DOC.contains(&row), "docs/PROTOCOL.md lacks the row {row}");
    }
}
