import { describe, expect, it } from "vitest";
import type { UiNetworkReport } from "./bindings";
import { capacityText } from "./capacity";
import { setLocale } from "./i18n";

function report(uplink: number | null, people: number[]): UiNetworkReport {
  const sizes: [number, number][] = [
    [640, 360],
    [320, 180],
    [160, 90],
  ];
  return {
    relay_ms: 3,
    relay_error: null,
    servers: [],
    verdict: "direct",
    relay_transport: "udp",
    credentials_refused: false,
    relay_ports_blocked: false,
    uplink_kbps: uplink,
    uplink_error: uplink === null ? "this meeting server does not measure uploads" : null,
    capacity: people.map((n, i) => {
      const [width, height] = sizes[i] ?? [0, 0];
      return { width, height, people: n };
    }),
  };
}

describe("the call capacity", () => {
  it("names the people each picture size allows, largest first", () => {
    setLocale("en");
    expect(capacityText(report(3000, [4, 11, 25]))).toBe(
      "Your upload (3.0 Mbit/s) is enough for a video call of 4 people at 640x360 (11 people at 320x180, 25+ people at 160x90).",
    );
  });

  it("says when the full picture fits nobody but smaller ones do", () => {
    setLocale("en");
    expect(capacityText(report(800, [1, 3, 8]))).toBe(
      "Your upload (0.8 Mbit/s) is too slow to send your video at 640x360: calls work with smaller pictures (3 people at 320x180, 8 people at 160x90).",
    );
  });

  it("says when only audio fits, and nothing when nothing was measured", () => {
    setLocale("en");
    expect(capacityText(report(50, [1, 1, 1]))).toBe(
      "Your upload (0.1 Mbit/s) is too slow for video: calls will carry audio only.",
    );
    expect(capacityText(report(null, []))).toBeNull();
  });

  it("is worded in the user's language", () => {
    setLocale("de");
    expect(capacityText(report(3000, [4, 11, 25]))).toContain("4 Personen bei 640x360");
    setLocale("en");
  });
});
