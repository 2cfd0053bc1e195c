import { describe, expect, it } from "vitest";
import { REACTION_MS, addReaction, expireReactions, handQueue, initialCall, MAX_CHAT_LINES, ownChat, recorders, reduce, shownShare } from "./call";
import type { UiEvent, UiParticipant } from "./bindings";

const alice: UiParticipant = {
  id: "a",
  name: "Alice",
  host: true,
  muted: false,
  camera: true,
  hand_raised: false, hand_order: null,
  reconnecting: false,
  recording: false,
};
const bob: UiParticipant = { ...alice, id: "b", name: "Bob", host: false };

function play(...events: UiEvent[]) {
  return events.reduce(reduce, initialCall());
}

describe("the call state", () => {
  it("starts connecting, then seats us with everyone already there", () => {
    expect(initialCall().phase.kind).toBe("connecting");
    const s = play({ type: "joined", self_id: "me", participants: [alice], host: false, locked: false, knocking: [] });
    expect(s.phase.kind).toBe("in_call");
    expect(s.peers.map((p) => p.name)).toEqual(["Alice"]);
    expect(s.peers[0]?.connected).toBe(false);
  });

  it("tracks joins, state changes, connections and departures", () => {
    const s = play(
      { type: "joined", self_id: "me", participants: [alice], host: false, locked: false, knocking: [] },
      { type: "participant", participant: bob },
      { type: "peer_connected", id: "b", candidate_type: "host" },
      { type: "participant", participant: { ...bob, muted: true } },
      { type: "participant_left", id: "a", reason: "left" },
    );
    expect(s.peers).toHaveLength(1);
    expect(s.peers[0]).toMatchObject({ id: "b", muted: true, connected: true });
    expect(s.notice).toEqual({ key: "left.left", params: { name: "Alice" } });
  });

  it("queues raised hands in the order the relay counted them, uncounted ones last", () => {
    const s = play(
      { type: "joined", self_id: "me", participants: [alice, bob], host: false, locked: false, knocking: [] },
      { type: "participant", participant: { ...bob, hand_raised: true, hand_order: 7 } },
      { type: "participant", participant: { ...alice, hand_raised: true, hand_order: 9 } },
      { type: "myself", participant: { ...alice, id: "me", name: "Me", hand_raised: true, hand_order: 8 } },
    );
    expect(handQueue(s, true, "Me").map((h) => h.name)).toEqual(["Bob", "Me", "Alice"]);
    // Our own hand, raised here and not counted by the relay yet, goes last; lowered, it goes.
    const fresh = reduce(s, { type: "myself", participant: { ...alice, id: "me", hand_raised: false, hand_order: null } });
    expect(handQueue(fresh, true, "Me").map((h) => h.id)).toEqual(["b", "a", "self"]);
    expect(handQueue(fresh, false, "Me").map((h) => h.id)).toEqual(["b", "a"]);
  });

  it("floats reactions on their tiles for a few seconds, and ignores unknown ones", () => {
    let s = play(
      { type: "joined", self_id: "me", participants: [alice], host: false, locked: false, knocking: [] },
      { type: "reaction", from: "a", emoji: "🎉" },
      { type: "reaction", from: "a", emoji: "💩" },
    );
    expect(s.reactions.map((r) => [r.tile, r.emoji])).toEqual([["a", "🎉"]]);
    const at = s.reactions[0]?.at ?? 0;
    s = addReaction(s, "self", "👍", at + 1000);
    expect(expireReactions(s, at + REACTION_MS - 1).reactions).toHaveLength(2);
    expect(expireReactions(s, at + REACTION_MS).reactions.map((r) => r.emoji)).toEqual(["👍"]);
    expect(expireReactions(s, at + REACTION_MS + 1000).reactions).toEqual([]);
  });

  it("shows everyone who records, and where our own recording was saved or why it stopped", () => {
    let s = play(
      { type: "joined", self_id: "me", participants: [alice, { ...bob, recording: true }], host: false, locked: false, knocking: [] },
    );
    expect(recorders(s)).toEqual(["Bob"]);
    s = reduce(s, { type: "participant", participant: { ...alice, recording: true } });
    expect(recorders(s)).toEqual(["Alice", "Bob"]);
    s = reduce(s, { type: "participant", participant: { ...bob, recording: false } });
    expect(recorders(s)).toEqual(["Alice"]);
    s = reduce(s, { type: "recording_started", path: "/home/me/Videos/Confer/call.mkv" });
    expect(s.myRecording).toBe("/home/me/Videos/Confer/call.mkv");
    s = reduce(s, { type: "recording_stopped", path: "/home/me/Videos/Confer/call.mkv", reason: null, duration_ms: 5000, bytes: 900000 });
    expect([s.myRecording, s.savedRecording]).toEqual([null, "/home/me/Videos/Confer/call.mkv"]);
    // One that could not start says why, and the last saved file stays shown.
    s = reduce(s, { type: "recording_stopped", path: null, reason: "could not write the recording /x: Permission denied", duration_ms: 0, bytes: 0 });
    expect(s.notice).toEqual({ key: "record.stopped_because", params: { reason: "could not write the recording /x: Permission denied" } });
    expect(s.savedRecording).toBe("/home/me/Videos/Confer/call.mkv");
  });

  it("shows a peer's share while it lasts and says why our own share stopped", () => {
    let s = play(
      { type: "joined", self_id: "me", participants: [alice, bob], host: false, locked: false, knocking: [] },
      { type: "peer_sharing", id: "b", sharing: true },
    );
    expect(shownShare(s)?.name).toBe("Bob");
    // A presence update from the relay does not lose the share.
    s = reduce(s, { type: "participant", participant: { ...bob, muted: true } });
    expect(shownShare(s)?.id).toBe("b");
    s = reduce(s, { type: "peer_sharing", id: "b", sharing: false });
    expect(shownShare(s)).toBeNull();
    s = reduce(s, { type: "share_started", source: "window:7" });
    expect(s.myShare).toBe("window:7");
    s = reduce(s, { type: "share_stopped", reason: "the shared window was closed" });
    expect(s.myShare).toBeNull();
    expect(s.notice).toEqual({ key: "share.stopped_because", params: { reason: "the shared window was closed" } });
    const asked = reduce(reduce(s, { type: "share_started", source: "screen:0" }), { type: "share_stopped", reason: null });
    expect(asked.myShare).toBeNull();
    expect(asked.notice).toEqual(s.notice);
  });

  it("names the peer it has no path to, why, and whether it is still trying", () => {
    const detail = "the meeting server offers no relay, and your network and Alice's both need one";
    let s = play(
      { type: "joined", self_id: "me", participants: [alice], host: false, locked: false, knocking: [] },
      { type: "peer_unreachable", id: "a", detail, cause: "no_relay_offered", retrying: true },
    );
    expect(s.peers[0]?.unreachable).toEqual({ cause: "no_relay_offered", detail, retrying: true });
    expect(s.peers[0]?.connected).toBe(false);
    s = reduce(s, { type: "peer_connected", id: "a", candidate_type: "relay" });
    expect(s.peers[0]?.unreachable).toBeNull();
  });

  it("keeps knockers for the host until their knock ends", () => {
    const s = play(
      { type: "joined", self_id: "me", participants: [], host: true, locked: true, knocking: [] },
      { type: "knock", knocker: { id: "k", name: "Kim" } },
      { type: "knock", knocker: { id: "k", name: "Kim" } },
    );
    expect(s.knocking).toEqual([{ id: "k", name: "Kim" }]);
    expect(reduce(s, { type: "knock_ended", id: "k" }).knocking).toEqual([]);
  });

  it("shows who speaks and keeps chat bounded", () => {
    let s = play(
      { type: "joined", self_id: "me", participants: [alice, bob], host: false, locked: false, knocking: [] },
      { type: "levels", levels: [{ id: "b", dbfs: -20, speaking: true }], active_speaker: "b" },
    );
    expect(s.peers.find((p) => p.id === "b")?.speaking).toBe(true);
    expect(s.peers.find((p) => p.id === "a")?.speaking).toBe(false);
    for (let i = 0; i < MAX_CHAT_LINES + 5; i++) s = reduce(s, { type: "chat", from: "a", text: `m${i}` });
    s = ownChat(s, "mine", "Me");
    expect(s.chat).toHaveLength(MAX_CHAT_LINES);
    expect(s.chat.at(-1)).toMatchObject({ text: "mine", mine: true });
    expect(s.chat.at(-2)).toMatchObject({ name: "Alice", text: `m${MAX_CHAT_LINES + 4}` });
  });

  it("says the relay is coming back, then carries on, and ends with the reason", () => {
    let s = play({ type: "joined", self_id: "me", participants: [], host: false, locked: false, knocking: [] });
    s = reduce(s, { type: "relay_reconnecting", cause: "connection reset" });
    expect(s.phase).toEqual({ kind: "relay_reconnecting", cause: "connection reset" });
    s = reduce(s, { type: "relay_resumed" });
    expect(s.phase.kind).toBe("in_call");
    s = reduce(s, { type: "ended", reason: "removed by a host" });
    expect(s.phase).toEqual({ kind: "ended", reason: "removed by a host" });
  });
});
