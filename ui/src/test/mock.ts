// A backend that records what the page asked for and lets a test play call events.
import type { Backend } from "../lib/backend";
import type { Settings, UiError, UiEvent, UiNetworkReport, UiPreviewEvent, UiShareSource } from "../lib/bindings";

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
  relay_only: false,
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
  preview(event: UiPreviewEvent): void;
  /** What the network check answers. */
  network: UiNetworkReport;
  /** What can be shared. */
  sources: UiShareSource[];
  /** Drops files on the window. */
  drop(paths: string[]): void;
}

export function mockBackend(settings: Settings = defaultSettings): Mock {
  const handlers = new Set<(e: UiEvent) => void>();
  const invites = new Set<(link: string) => void>();
  const previews = new Set<(e: UiPreviewEvent) => void>();
  const drops = new Set<(paths: string[]) => void>();
  const calls: [string, unknown][] = [];
  const record = (name: string, args?: unknown) => {
    calls.push([name, args]);
    return Promise.resolve();
  };
  const mock: Mock = {
    calls,
    failJoinWith: null,
    duringJoin: [],
    sources: [
      { id: "screen:0", kind: "screen", name: "DP-1", width: 1920, height: 1080, thumbnail: null },
      { id: "window:42", kind: "window", name: "Quarterly figures", width: 800, height: 600, thumbnail: null },
    ],
    network: {
      relay_ms: 12,
      relay_error: null,
      servers: [
        {
          url: "stun:stun.example.org:3478",
          turn: false,
          ms: 20,
          address: "203.0.113.7:40000",
          error: null,
          skipped: false,
        },
        {
          url: "turn:turn.example.org:3478",
          turn: true,
          ms: null,
          address: null,
          error: "server silent: no answer within 5 s (UDP blocked, or no server there)",
          skipped: false,
        },
      ],
      verdict: "direct_no_relay",
      relay_transport: null,
      credentials_refused: false,
      relay_ports_blocked: false,
      uplink_kbps: 3000,
      uplink_error: null,
      capacity: [
        { width: 640, height: 360, people: 4 },
        { width: 320, height: 180, people: 11 },
        { width: 160, height: 90, people: 25 },
      ],
    },
    preview: (event) => previews.forEach((h) => h(event)),
    drop: (paths) => drops.forEach((h) => h(paths)),
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
    shareSources: async () => {
      calls.push(["share_sources", null]);
      return mock.sources;
    },
    shareScreen: (source) => record("share_screen", source),
    record: (on) => record("record", on),
    sendChat: (text) => record("send_chat", text),
    react: (emoji) => record("react", emoji),
    sendFile: (path) => record("send_file", path),
    onFileDrop: async (handler) => {
      drops.add(handler);
      return () => drops.delete(handler);
    },
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
    startPreview: async (camera, microphone) => {
      calls.push(["start_preview", { camera, microphone }]);
      return calls.filter(([name]) => name === "start_preview").length;
    },
    stopPreview: () => record("stop_preview"),
    onPreviewEvent: async (handler) => {
      previews.add(handler);
      return () => previews.delete(handler);
    },
    testSpeaker: async (speaker) => {
      calls.push(["test_speaker", speaker]);
      return { played_ms: 700, sound_ms: 700, peak_dbfs: -12.5 };
    },
    networkCheck: async (link) => {
      calls.push(["network_check", link]);
      return mock.network;
    },
  };
  return mock;
}
