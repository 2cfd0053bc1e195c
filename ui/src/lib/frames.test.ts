import { afterEach, describe, expect, it, vi } from "vitest";
import { FrameFeed, HEADER, parseFrame } from "./frames";
import { i420ToRgba } from "./renderer";

function message(tile: string, width: number, height: number, luma: number, extra = 0): ArrayBuffer {
  const id = new TextEncoder().encode(tile);
  const size = HEADER + id.length + (width * height * 3) / 2 + extra;
  const buffer = new ArrayBuffer(size);
  const view = new DataView(buffer);
  new Uint8Array(buffer).set(new TextEncoder().encode("CFV1"), 0);
  view.setUint16(4, width, true);
  view.setUint16(6, height, true);
  view.setBigUint64(8, 1_700_000_000_000_000n, true);
  view.setUint32(16, 7, true);
  view.setUint8(20, id.length);
  new Uint8Array(buffer).set(id, HEADER);
  const planes = new Uint8Array(buffer, HEADER + id.length);
  planes.fill(128);
  planes.fill(luma, 0, width * height);
  return buffer;
}

describe("frame socket messages", () => {
  it("are read into a tile id, a time and three planes", () => {
    const f = parseFrame(message("peer-1", 4, 2, 235));
    expect(f).not.toBeNull();
    expect(f).toMatchObject({ tile: "peer-1", width: 4, height: 2, seq: 7, capturedUs: 1_700_000_000_000_000 });
    expect([...(f?.y ?? [])]).toEqual(Array(8).fill(235));
    expect(f?.u.length).toBe(2);
    expect(f?.v.length).toBe(2);
  });

  it("are refused when truncated, padded, odd-sized or not frames", () => {
    expect(parseFrame(new ArrayBuffer(10))).toBeNull();
    expect(parseFrame(message("x", 4, 2, 0, 1))).toBeNull();
    expect(parseFrame(message("x", 4, 2, 0).slice(0, 30))).toBeNull();
    expect(parseFrame(message("x", 3, 2, 0))).toBeNull();
    const bad = message("x", 4, 2, 0);
    new Uint8Array(bad)[0] = 0x58;
    expect(parseFrame(bad)).toBeNull();
  });

  it("convert to the colours they encode (BT.601, limited range)", () => {
    const white = parseFrame(message("w", 2, 2, 235));
    const black = parseFrame(message("b", 2, 2, 16));
    const out = new Uint8ClampedArray(16);
    if (!white || !black) throw new Error("frames");
    i420ToRgba(white, out);
    expect([...out.subarray(0, 4)]).toEqual([255, 255, 255, 255]);
    i420ToRgba(black, out);
    expect([...out.subarray(0, 4)]).toEqual([0, 0, 0, 255]);
  });
});

describe("the frame feed", () => {
  afterEach(() => vi.unstubAllGlobals());

  it("tells the app each tile's drawn size, all at once, and again after reconnecting", async () => {
    const sockets: FakeSocket[] = [];
    class FakeSocket {
      static readonly OPEN = 1;
      readyState = 0;
      sent: string[] = [];
      binaryType = "";
      onopen: (() => void) | null = null;
      onclose: (() => void) | null = null;
      onmessage: ((m: { data: unknown }) => void) | null = null;
      constructor(readonly url: string) {
        sockets.push(this);
      }
      send(text: string) {
        this.sent.push(text);
      }
      close() {}
      open() {
        this.readyState = 1;
        this.onopen?.();
      }
    }
    vi.stubGlobal("WebSocket", FakeSocket);
    const feed = new FrameFeed("ws://127.0.0.1:1/?token=x");
    feed.start();
    const first = sockets[0];
    if (!first) throw new Error("the feed opened no socket");
    feed.setSize("a", [320.4, 180]);
    first.open();
    expect(first.sent.map((m) => JSON.parse(m))).toEqual([{ sizes: { a: [320, 180] } }]);
    // A layout pass that resizes several tiles is one message.
    feed.setSize("a", [640, 360]);
    feed.setSize("b", [640, 360]);
    feed.setSize("c", [1, 1]);
    feed.setSize("c", null);
    await Promise.resolve();
    expect(first.sent.slice(1).map((m) => JSON.parse(m))).toEqual([{ sizes: { a: [640, 360], b: [640, 360] } }]);
    // The socket drops; the feed reconnects and says the sizes again on the new one.
    vi.useFakeTimers();
    first.onclose?.();
    vi.advanceTimersByTime(600);
    vi.useRealTimers();
    const second = sockets[1];
    if (!second) throw new Error("the feed did not reconnect");
    second.open();
    expect(second.sent.map((m) => JSON.parse(m))).toEqual([{ sizes: { a: [640, 360], b: [640, 360] } }]);
    // The window is minimised, then shown again: said with the sizes, once per change.
    feed.setHidden(true);
    feed.setHidden(true);
    await Promise.resolve();
    feed.setHidden(false);
    await Promise.resolve();
    expect(second.sent.slice(1).map((m) => JSON.parse(m))).toEqual([
      { sizes: { a: [640, 360], b: [640, 360] }, hidden: true },
      { sizes: { a: [640, 360], b: [640, 360] } },
    ]);
    feed.close();
  });
});
