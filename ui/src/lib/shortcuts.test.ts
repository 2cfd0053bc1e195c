import { describe, expect, it } from "vitest";
import { shortcut, type KeyInfo } from "./shortcuts";

const key = (k: string, more: Partial<KeyInfo> = {}): KeyInfo => ({
  key: k,
  type: "keydown",
  repeat: false,
  ctrlKey: false,
  altKey: false,
  metaKey: false,
  targetIsEditable: false,
  ...more,
});

describe("keyboard shortcuts", () => {
  it("mute on M, camera on V", () => {
    expect(shortcut(key("m"))).toBe("toggle_mute");
    expect(shortcut(key("M"))).toBe("toggle_mute");
    expect(shortcut(key("v"))).toBe("toggle_camera");
  });

  it("talk while Space is held, once per press", () => {
    expect(shortcut(key(" "))).toBe("talk_start");
    expect(shortcut(key(" ", { repeat: true }))).toBeNull();
    expect(shortcut(key(" ", { type: "keyup" }))).toBe("talk_stop");
  });

  it("leave typing and browser shortcuts alone", () => {
    expect(shortcut(key("m", { targetIsEditable: true }))).toBeNull();
    expect(shortcut(key(" ", { targetIsEditable: true }))).toBeNull();
    expect(shortcut(key("v", { ctrlKey: true }))).toBeNull();
    expect(shortcut(key("m", { repeat: true }))).toBeNull();
  });
});
