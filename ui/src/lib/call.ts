// The call as the page sees it, built from `call` events by a pure reducer (unit-tested).
import type { UiEvent, UiKnocker, UiParticipant, UiPeerStats } from "./bindings";

export type Phase =
  | { kind: "connecting" } // to the relay
  | { kind: "knocking" } // waiting for the host
  | { kind: "in_call" }
  | { kind: "relay_reconnecting"; cause: string }
  | { kind: "ended"; reason: string | null };

export interface Peer extends UiParticipant {
  /** Media flows with it. */
  connected: boolean;
  /** No network path (yet, if `retrying`): the cause, and what was tried. */
  unreachable: Unreachable | null;
  speaking: boolean;
  stats: UiPeerStats | null;
  /** Sharing a screen now: its pictures are frame-socket tile `share:<id>`. */
  sharing: boolean;
}

export interface Unreachable {
  /** `call.no_path.<cause>` words it; null: a local failure, said in `detail` (English). */
  cause: string | null;
  detail: string;
  retrying: boolean;
}

export interface ChatLine {
  from: string;
  name: string;
  text: string;
  mine: boolean;
}

/** The reactions a participant can send. */
export const REACTIONS = ["👍", "👏", "😂", "❤️", "🎉", "😮"] as const;
/** How long a reaction floats on its tile, ms. */
export const REACTION_MS = 4000;

export interface FloatingReaction {
  /** Unique among the reactions shown. */
  key: number;
  /** The tile: a participant id, or `self`. */
  tile: string;
  emoji: string;
  /** When it arrived (`Date.now()`). */
  at: number;
}

/** A file on its way to or from one participant. */
export interface Transfer {
  /** `<transfer id>:<peer>` (a file sent to everyone is one transfer per peer). */
  key: string;
  peer: string;
  peerName: string;
  name: string;
  sending: boolean;
  done: number;
  size: number;
  state: "running" | "done" | "failed";
  /** Where a received file was saved. */
  path: string | null;
  /** Why it failed. */
  reason: string | null;
}

export interface CallState {
  phase: Phase;
  selfId: string | null;
  host: boolean;
  locked: boolean;
  peers: Peer[];
  knocking: UiKnocker[];
  chat: ChatLine[];
  activeSpeaker: string | null;
  /** The latest notice worth a toast (device failed, relay error, someone left). */
  notice: { key: string; params: Record<string, string> } | null;
  /** What this participant shares (`screen:<n>`, `window:<id>`), while it does. */
  myShare: string | null;
  /** Several may share at once (a host allowed it); else one at a time. */
  severalShares: boolean;
  /** This participant as the relay sees it (its hand's place in the queue). */
  me: UiParticipant | null;
  /** File transfers of this call, oldest first (at most 50 kept). */
  transfers: Transfer[];
  /** Reactions floating on tiles now, oldest first. */
  reactions: FloatingReaction[];
  /** Key of the next reaction. */
  nextReaction: number;
  /** The file our recording is written to, while it runs. */
  myRecording: string | null;
  /** The last recording we finished, where it was saved. */
  savedRecording: string | null;
}

export function initialCall(): CallState {
  return {
    phase: { kind: "connecting" },
    selfId: null,
    host: false,
    locked: false,
    peers: [],
    knocking: [],
    chat: [],
    activeSpeaker: null,
    notice: null,
    myShare: null,
    severalShares: false,
    me: null,
    transfers: [],
    reactions: [],
    nextReaction: 1,
    myRecording: null,
    savedRecording: null,
  };
}

export interface RaisedHand {
  /** A participant id, or `self`. */
  id: string;
  name: string;
}

/**
 * Raised hands in the order they went up (as the relay counted them; a hand it has not counted
 * yet goes last). `handRaised` is this participant's own hand, as this page knows it first.
 */
export function handQueue(state: CallState, handRaised: boolean, selfName: string): RaisedHand[] {
  const hands = state.peers
    .filter((p) => p.hand_raised)
    .map((p) => ({ id: p.id, name: p.name, order: p.hand_order }));
  if (handRaised) hands.push({ id: "self", name: selfName, order: state.me?.hand_raised ? state.me.hand_order : null });
  const place = (order: number | null) => order ?? Number.MAX_SAFE_INTEGER;
  return hands.sort((a, b) => place(a.order) - place(b.order)).map(({ id, name }) => ({ id, name }));
}

/** Adds a reaction on `tile`; at most 20 float at once (the oldest go first). */
export function addReaction(state: CallState, tile: string, emoji: string, at: number = Date.now()): CallState {
  const reaction = { key: state.nextReaction, tile, emoji, at };
  return { ...state, reactions: [...state.reactions, reaction].slice(-20), nextReaction: state.nextReaction + 1 };
}

/** Drops the reactions that have floated for [`REACTION_MS`] by `now`. */
export function expireReactions(state: CallState, now: number = Date.now()): CallState {
  const kept = state.reactions.filter((r) => now - r.at < REACTION_MS);
  return kept.length === state.reactions.length ? state : { ...state, reactions: kept };
}

function peerFrom(p: UiParticipant, old?: Peer): Peer {
  return {
    ...p,
    connected: old?.connected ?? false,
    unreachable: old?.unreachable ?? null,
    speaking: old?.speaking ?? false,
    stats: old?.stats ?? null,
    sharing: old?.sharing ?? false,
  };
}

function updatePeer(state: CallState, id: string, change: (p: Peer) => Peer): Peer[] {
  return state.peers.map((p) => (p.id === id ? change(p) : p));
}

export const MAX_CHAT_LINES = 500;

export function reduce(state: CallState, event: UiEvent): CallState {
  switch (event.type) {
    case "joined":
      return {
        ...state,
        phase: { kind: "in_call" },
        selfId: event.self_id,
        host: event.host,
        locked: event.locked,
        knocking: event.knocking,
        peers: event.participants.map((p) => peerFrom(p, state.peers.find((o) => o.id === p.id))),
      };
    case "knocking":
      return { ...state, phase: { kind: "knocking" } };
    case "knock":
      return { ...state, knocking: [...state.knocking.filter((k) => k.id !== event.knocker.id), event.knocker] };
    case "knock_ended":
      return { ...state, knocking: state.knocking.filter((k) => k.id !== event.id) };
    case "room_locked":
      return { ...state, locked: event.locked };
    case "participant": {
      if (event.participant.id === state.selfId) return state;
      const old = state.peers.find((p) => p.id === event.participant.id);
      const peer = peerFrom(event.participant, old);
      return {
        ...state,
        peers: old ? state.peers.map((p) => (p.id === peer.id ? peer : p)) : [...state.peers, peer],
      };
    }
    case "participant_reconnecting":
      return { ...state, peers: updatePeer(state, event.id, (p) => ({ ...p, reconnecting: true })) };
    case "participant_left": {
      const who = state.peers.find((p) => p.id === event.id);
      return {
        ...state,
        peers: state.peers.filter((p) => p.id !== event.id),
        notice: who ? { key: `left.${event.reason}`, params: { name: who.name } } : state.notice,
      };
    }
    case "peer_connected":
      return {
        ...state,
        peers: updatePeer(state, event.id, (p) => ({ ...p, connected: true, unreachable: null })),
      };
    case "peer_unreachable":
      return {
        ...state,
        peers: updatePeer(state, event.id, (p) => ({
          ...p,
          connected: false,
          unreachable: { cause: event.cause, detail: event.detail, retrying: event.retrying },
        })),
      };
    case "levels": {
      const speaking = new Set(event.levels.filter((l) => l.speaking).map((l) => l.id));
      return {
        ...state,
        activeSpeaker: event.active_speaker,
        peers: state.peers.map((p) => (p.speaking === speaking.has(p.id) ? p : { ...p, speaking: speaking.has(p.id) })),
      };
    }
    case "chat": {
      const name = state.peers.find((p) => p.id === event.from)?.name ?? "?";
      const line = { from: event.from, name, text: event.text, mine: false };
      return { ...state, chat: [...state.chat, line].slice(-MAX_CHAT_LINES) };
    }
    case "stats": {
      const byId = new Map(event.peers.map((s) => [s.id, s]));
      return { ...state, peers: state.peers.map((p) => ({ ...p, stats: byId.get(p.id) ?? p.stats })) };
    }
    case "device_switched":
      return { ...state, notice: { key: "device.switched", params: { device: event.device } } };
    case "device_failed":
      return {
        ...state,
        notice: { key: "device.failed", params: { device: event.device, reason: event.reason } },
      };
    case "relay_error":
      return { ...state, notice: { key: "relay.error", params: { code: event.code, message: event.message } } };
    case "network_changed":
      return { ...state, notice: { key: "network.changed", params: {} } };
    case "relay_reconnecting":
      return { ...state, phase: { kind: "relay_reconnecting", cause: event.cause } };
    case "relay_resumed":
      return { ...state, phase: { kind: "in_call" } };
    case "ended":
      return { ...state, phase: { kind: "ended", reason: event.reason }, myShare: null, myRecording: null };
    case "share_started":
      return { ...state, myShare: event.source };
    case "share_stopped":
      return {
        ...state,
        myShare: null,
        notice: event.reason ? { key: "share.stopped_because", params: { reason: event.reason } } : state.notice,
      };
    case "file_progress":
      return withTransfer(state, `${event.id}:${event.peer}`, event.peer, event.name, event.sending, (t) => ({
        ...t,
        done: event.done,
        size: event.size,
      }));
    case "file_received":
      // (No id in a finished transfer's event: it replaces the running one of the same name and peer.)
      return withTransfer(state, finishing(state, event.from, event.name, false), event.from, event.name, false, (t) => ({
        ...t,
        done: event.size,
        size: event.size,
        state: "done",
        path: event.path,
      }));
    case "file_sent":
      return withTransfer(state, finishing(state, event.to, event.name, true), event.to, event.name, true, (t) => ({
        ...t,
        done: event.size,
        size: event.size,
        state: "done",
      }));
    case "file_failed":
      return withTransfer(state, finishing(state, event.peer, event.name, event.sending), event.peer, event.name, event.sending, (t) => ({
        ...t,
        state: "failed",
        reason: event.reason,
      }));
    case "myself":
      return { ...state, me: event.participant };
    case "reaction":
      return (REACTIONS as readonly string[]).includes(event.emoji) ? addReaction(state, event.from, event.emoji) : state;
    case "share_policy":
      return { ...state, severalShares: event.several };
    case "recording_started":
      return { ...state, myRecording: event.path };
    case "recording_stopped":
      return {
        ...state,
        myRecording: null,
        savedRecording: event.path && event.bytes > 0 ? event.path : state.savedRecording,
        notice: event.reason ? { key: "record.stopped_because", params: { reason: event.reason } } : state.notice,
      };
    case "peer_sharing":
      return { ...state, peers: updatePeer(state, event.id, (p) => ({ ...p, sharing: event.sharing })) };
  }
}

/** The names of the others recording this call, in join order (everyone is shown who records). */
export function recorders(state: CallState): string[] {
  return state.peers.filter((p) => p.recording).map((p) => p.name);
}

/** Whose share to show large: the first participant sharing (in join order), if any. */
export function shownShare(state: CallState): Peer | null {
  return state.peers.find((p) => p.sharing) ?? null;
}

/** Adds a message this participant sent. */
export function ownChat(state: CallState, text: string, name: string): CallState {
  const line = { from: state.selfId ?? "self", name, text, mine: true };
  return { ...state, chat: [...state.chat, line].slice(-MAX_CHAT_LINES) };
}

/** The key of the running transfer of `name` with `peer` in this direction, or a new one. */
function finishing(state: CallState, peer: string, name: string, sending: boolean): string {
  const running = state.transfers.find(
    (t) => t.peer === peer && t.name === name && t.sending === sending && t.state === "running",
  );
  return running?.key ?? `${name}:${peer}:${state.transfers.length}`;
}

/** Updates (or starts) the transfer `key`. */
function withTransfer(
  state: CallState,
  key: string,
  peer: string,
  name: string,
  sending: boolean,
  change: (t: Transfer) => Transfer,
): CallState {
  const old = state.transfers.find((t) => t.key === key);
  const peerName = state.peers.find((p) => p.id === peer)?.name ?? "?";
  const base: Transfer = old ?? {
    key,
    peer,
    peerName,
    name,
    sending,
    done: 0,
    size: 0,
    state: "running",
    path: null,
    reason: null,
  };
  const next = change(base);
  const transfers = old
    ? state.transfers.map((t) => (t.key === key ? next : t))
    : [...state.transfers, next].slice(-50);
  return { ...state, transfers };
}
