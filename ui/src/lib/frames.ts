// The frame socket's messages (see src-tauri/src/video.rs): a 24-byte header, the tile id,
// then the I420 planes.

export const HEADER = 24;

export interface Frame {
  tile: string;
  width: number;
  height: number;
  /** Capture time, Unix microseconds (0 if unknown). */
  capturedUs: number;
  seq: number;
  y: Uint8Array;
  u: Uint8Array;
  v: Uint8Array;
}

const decoder = new TextDecoder();

/** Reads one message; `null` if it is not a whole, well-formed frame. */
export function parseFrame(data: ArrayBuffer): Frame | null {
  if (data.byteLength < HEADER) return null;
  const view = new DataView(data);
  if (view.getUint32(0, false) !== 0x43465631 /* "CFV1" */) return null;
  const width = view.getUint16(4, true);
  const height = view.getUint16(6, true);
  const capturedUs = Number(view.getBigUint64(8, true));
  const seq = view.getUint32(16, true);
  const idLength = view.getUint8(20);
  if (width === 0 || height === 0 || width % 2 !== 0 || height % 2 !== 0) return null;
  const lumaSize = width * height;
  const chromaSize = (width / 2) * (height / 2);
  const start = HEADER + idLength;
  if (data.byteLength !== start + lumaSize + 2 * chromaSize) return null;
  const tile = decoder.decode(new Uint8Array(data, HEADER, idLength));
  return {
    tile,
    width,
    height,
    capturedUs,
    seq,
    y: new Uint8Array(data, start, lumaSize),
    u: new Uint8Array(data, start + lumaSize, chromaSize),
    v: new Uint8Array(data, start + lumaSize + chromaSize, chromaSize),
  };
}

export type FrameListener = (frame: Frame) => void;

/** How the frame socket is doing (read by tests and the benchmark through `window.__confer`). */
export const feedStatus = { opened: 0, closed: 0, frames: 0, bad: 0, perTile: {} as Record<string, number> };

/** Receives frames and hands each to the listener of its tile (the newest only is kept). */
export class FrameFeed {
  private socket: WebSocket | null = null;
  private listeners = new Map<string, FrameListener>();
  private latest = new Map<string, Frame>();
  private closed = false;
  private sizes = new Map<string, [number, number]>();
  private sizesDue = false;
  private hidden = false;

  constructor(private readonly url: string) {}

  /**
   * Tells the app how large `tile` is drawn, in device pixels, so it sends frames no larger
   * (`null`: the tile is gone). Sent for all tiles at once, after the current layout pass.
   */
  setSize(tile: string, size: [number, number] | null): void {
    if (size) this.sizes.set(tile, [Math.max(1, Math.round(size[0])), Math.max(1, Math.round(size[1]))]);
    else this.sizes.delete(tile);
    this.sizesChanged();
  }

  /**
   * Tells the app whether the window is hidden (minimised, on another workspace): the others
   * are then asked for no video (audio goes on), and for their tiles' sizes again once shown.
   */
  setHidden(hidden: boolean): void {
    if (hidden === this.hidden) return;
    this.hidden = hidden;
    this.sizesChanged();
  }

  private sizesChanged(): void {
    if (this.sizesDue) return;
    this.sizesDue = true;
    queueMicrotask(() => {
      this.sizesDue = false;
      this.sendSizes();
    });
  }

  private sendSizes(): void {
    if (this.socket?.readyState !== WebSocket.OPEN) return;
    const sizes = Object.fromEntries(this.sizes);
    this.socket.send(JSON.stringify(this.hidden ? { sizes, hidden: true } : { sizes }));
  }

  start(): void {
    if (this.closed) return;
    const socket = new WebSocket(this.url);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (message) => {
      if (!(message.data instanceof ArrayBuffer)) return;
      const frame = parseFrame(message.data);
      if (!frame) {
        feedStatus.bad += 1;
        socket.send("1");
        return;
      }
      feedStatus.frames += 1;
      feedStatus.perTile[frame.tile] = (feedStatus.perTile[frame.tile] ?? 0) + 1;
      const listener = this.listeners.get(frame.tile);
      if (listener) listener(frame);
      else this.latest.set(frame.tile, frame);
      // Taken (drawn, for a tile on screen): the shell may send another.
      socket.send("1");
    };
    socket.onopen = () => {
      feedStatus.opened += 1;
      this.sendSizes();
    };
    socket.onclose = () => {
      feedStatus.closed += 1;
      this.socket = null;
      if (!this.closed) setTimeout(() => this.start(), 500);
    };
    this.socket = socket;
  }

  /** Calls `listener` with every frame of `tile` (and the newest one already here). */
  listen(tile: string, listener: FrameListener): () => void {
    this.listeners.set(tile, listener);
    const waiting = this.latest.get(tile);
    if (waiting) {
      this.latest.delete(tile);
      listener(waiting);
    }
    return () => {
      if (this.listeners.get(tile) === listener) this.listeners.delete(tile);
    };
  }

  close(): void {
    this.closed = true;
    this.socket?.close();
  }
}
