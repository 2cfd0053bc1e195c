// The one module that talks to the Rust shell. Screens call `backend()`; tests install a mock
// with `setBackend`. Every command fails with a `UiError` (a stable code plus a message).
import type {
  FrameSocket,
  JoinRequest,
  Settings,
  SettingsState,
  UiDevices,
  UiError,
  UiEvent,
  UiMeeting,
  UiNetworkReport,
  UiPreviewEvent,
  UiShareSource,
  UiSoundCheck,
} from "./bindings";

export type DeviceKind = "camera" | "microphone" | "speaker";
export type HostAction =
  | "lock"
  | "unlock"
  | "admit"
  | "deny"
  | "remove"
  | "stop_share"
  | "several_shares"
  | "one_share";

export interface Backend {
  frameSocket(): Promise<FrameSocket>;
  settings(): Promise<SettingsState>;
  saveSettings(settings: Settings): Promise<void>;
  launchLink(): Promise<string | null>;
  devices(): Promise<UiDevices>;
  newMeeting(): Promise<UiMeeting>;
  join(request: JoinRequest): Promise<void>;
  leave(): Promise<void>;
  setMuted(muted: boolean): Promise<void>;
  setCamera(on: boolean): Promise<void>;
  raiseHand(raised: boolean): Promise<void>;
  /** The screens and windows that can be shared, with thumbnails. */
  shareSources(): Promise<UiShareSource[]>;
  /** Shares a screen or window with everyone (`null` stops); `share_*` events say how it went. */
  shareScreen(source: string | null): Promise<void>;
  /** Starts or stops recording the call (`recording_*` events follow; everyone is told first). */
  record(on: boolean): Promise<void>;
  sendChat(text: string): Promise<void>;
  /** Sends the file at `path` to everyone in the call (`file_*` events follow). */
  sendFile(path: string): Promise<void>;
  /** Calls `handler` with the paths of files dropped on the window, until the returned function is called. */
  onFileDrop(handler: (paths: string[]) => void): Promise<() => void>;
  /** Sends a reaction (one of `REACTIONS`) to everyone. */
  react(emoji: string): Promise<void>;
  chooseDevice(kind: DeviceKind, id: string): Promise<void>;
  hostAction(action: HostAction, peer?: string): Promise<void>;
  /** Calls `handler` for every call event until the returned function is called. */
  onCallEvent(handler: (event: UiEvent) => void): Promise<() => void>;
  /** The tile benchmark (only with CONFER_BENCH_TILES set in the app's environment). */
  benchTiles(count: number, fps: number, width: number, height: number, seconds: number): Promise<void>;
  /** Calls `handler` with each invite link opened while the app runs (a second launch). */
  onInvite(handler: (link: string) => void): Promise<() => void>;
  /**
   * Shows the camera (frame-socket tile `preview`) and the microphone's level until stopped;
   * resolves to the preview's number, which its events carry.
   */
  startPreview(camera: string, microphone: string): Promise<number>;
  stopPreview(): Promise<void>;
  /** Calls `handler` for every preview event until the returned function is called. */
  onPreviewEvent(handler: (event: UiPreviewEvent) => void): Promise<() => void>;
  /** Plays a chime on the speaker; resolves once it has played. */
  testSpeaker(speaker: string): Promise<UiSoundCheck>;
  /** Checks the link's relay and its STUN/TURN servers without joining. */
  networkCheck(link: string): Promise<UiNetworkReport>;
}

/** Whether `value` is the shell's error shape. */
export function isUiError(value: unknown): value is UiError {
  return (
    typeof value === "object" &&
    value !== null &&
    typeof (value as UiError).code === "string" &&
    typeof (value as UiError).message === "string"
  );
}

/** Any failure as a `UiError` (a plain exception becomes the `webrtc`-free code `media`). */
export function asUiError(value: unknown): UiError {
  if (isUiError(value)) return value;
  return { code: "relay_protocol", message: String(value) };
}

async function tauriBackend(): Promise<Backend> {
  const { invoke } = await import("@tauri-apps/api/core");
  const { listen } = await import("@tauri-apps/api/event");
  return {
    frameSocket: () => invoke("frame_socket"),
    settings: () => invoke("settings"),
    saveSettings: (settings) => invoke("save_settings", { settings }),
    launchLink: () => invoke("launch_link"),
    devices: () => invoke("devices"),
    newMeeting: () => invoke("new_meeting"),
    join: (request) => invoke("join", { request }),
    leave: () => invoke("leave"),
    setMuted: (muted) => invoke("set_muted", { muted }),
    setCamera: (on) => invoke("set_camera", { on }),
    raiseHand: (raised) => invoke("raise_hand", { raised }),
    shareSources: () => invoke("share_sources"),
    shareScreen: (source) => invoke("share_screen", { source }),
    record: (on) => invoke("record", { on }),
    sendChat: (text) => invoke("send_chat", { text }),
    react: (emoji) => invoke("react", { emoji }),
    sendFile: (path) => invoke("send_file", { path }),
    onFileDrop: async (handler) => {
      const { getCurrentWebview } = await import("@tauri-apps/api/webview");
      return getCurrentWebview().onDragDropEvent((e) => {
        if (e.payload.type === "drop" && e.payload.paths.length > 0) handler(e.payload.paths);
      });
    },
    chooseDevice: (kind, id) => invoke("choose_device", { kind, id }),
    hostAction: (action, peer) => invoke("host_action", { action, peer: peer ?? null }),
    onCallEvent: async (handler) => listen<UiEvent>("call", (e) => handler(e.payload)),
    benchTiles: (count, fps, width, height, seconds) =>
      invoke("bench_tiles", { count, fps, width, height, seconds }),
    onInvite: async (handler) => listen<string>("invite", (e) => handler(e.payload)),
    startPreview: (camera, microphone) => invoke("start_preview", { camera, microphone }),
    stopPreview: () => invoke("stop_preview"),
    onPreviewEvent: async (handler) => listen<UiPreviewEvent>("preview", (e) => handler(e.payload)),
    testSpeaker: (speaker) => invoke("test_speaker", { speaker }),
    networkCheck: (link) => invoke("network_check", { link }),
  };
}

let current: Promise<Backend> | null = null;

/** The backend: the Tauri shell unless a test installed another. */
export function backend(): Promise<Backend> {
  current ??= tauriBackend();
  return current;
}

/** Installs a backend (tests). */
export function setBackend(b: Backend): void {
  current = Promise.resolve(b);
}
