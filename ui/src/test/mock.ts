// A backend that records what the page asked for and lets a test play call events.
import type { Backend } from "../lib/backend";
import type { Settings, UiError, UiEvent } from "../lib/bindings";

export const defaultSettings: Settings = {
  name: "Ada",
  relay_url: "",
  camera: "synthetic",
  microphone: "synthetic",
  speaker: "synthetic",
  video_quality: "standard",
  echo_cancellation: true,
  noise_suppression: true,
  music_mode: false,
  synthetic_pattern: 1,
  recent: [],
};

export interface Mock extends Backend {
  calls: [string, unknown][];
  emit(event: UiEvent): void;
  invite(link: string): void;
  failJoinWith: UiError | null;
  /** Events the engine sends while the join command is still running. */
  duringJoin: UiEvent[];
}

export function mockBackend(settings: Settings = defaultSettings): Mock {
  const handlers = new Set<(e: UiEvent) => void>();
  const invites = new Set<(link: string) => void>();
  const calls: [string, unknown][] = [];
  const record = (name: string, args?: unknown) => {
    calls.push([name, args]);
    return Promise.resolve();
  };
  const mock: Mock = {
    calls,
    failJoinWith: null,
    duringJoin: [],
    emit: (event) => handlers.forEach((h) => h(event)),
    invite: (link) => invites.forEach((h) => h(link)),
    frameSocket: async () => ({ url: "ws://127.0.0.1:1/?token=x" }),
    settings: async () => ({ settings, problem: null }),
    saveSettings: (s) => record("save_settings", s),
    launchLink: async () => null,
    devices: async () => ({
      cameras: [{ id: "synthetic", name: "Synthetic camera", is_default: false }],
      microphones: [{ id: "synthetic", name: "Synthetic microphone", is_default: false }],
      speakers: [{ id: "synthetic", name: "Synthetic speaker", is_default: false }],
    }),
    newMeeting: async () => ({
      host_link: "confer://join?host",
      invite_link: "confer://join?guest",
      web_link: "https://relay/j/x",
      embedded: true,
    }),
    join: async (request) => {
      calls.push(["join", request]);
      if (mock.failJoinWith) throw mock.failJoinWith;
      mock.duringJoin.forEach(mock.emit);
    },
    leave: () => record("leave"),
    setMuted: (muted) => record("set_muted", muted),
    setCamera: (on) => record("set_camera", on),
    raiseHand: (raised) => record("raise_hand", raised),
    sendChat: (text) => record("send_chat", text),
    chooseDevice: (kind, id) => record("choose_device", { kind, id }),
    hostAction: (action, peer) => record("host_action", { action, peer }),
    onCallEvent: async (handler) => {
      handlers.add(handler);
      return () => handlers.delete(handler);
    },
    benchTiles: (count) => record("bench_tiles", count),
    onInvite: async (handler) => {
      invites.add(handler);
      return () => invites.delete(handler);
    },
  };
  return mock;
}
