// Keyboard shortcuts in a call: M mutes, V toggles the camera, Space held talks while muted.
// Typing in a text field never triggers them.

export type Action = "toggle_mute" | "toggle_camera" | "talk_start" | "talk_stop";

export interface KeyInfo {
  key: string;
  type: "keydown" | "keyup";
  repeat: boolean;
  ctrlKey: boolean;
  altKey: boolean;
  metaKey: boolean;
  targetIsEditable: boolean;
}

export function shortcut(e: KeyInfo): Action | null {
  if (e.targetIsEditable || e.ctrlKey || e.altKey || e.metaKey) return null;
  if (e.key === " ") {
    if (e.type === "keydown" && !e.repeat) return "talk_start";
    if (e.type === "keyup") return "talk_stop";
    return null;
  }
  if (e.type !== "keydown" || e.repeat) return null;
  switch (e.key.toLowerCase()) {
    case "m":
      return "toggle_mute";
    case "v":
      return "toggle_camera";
    default:
      return null;
  }
}

export function isEditable(target: EventTarget | null): boolean {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
}
