// What jsdom lacks and the page uses: layout observation, a socket that goes nowhere, canvases.
class NoResize {
  observe() {}
  unobserve() {}
  disconnect() {}
}
globalThis.ResizeObserver ??= NoResize as unknown as typeof ResizeObserver;

class QuietSocket extends EventTarget {
  binaryType = "arraybuffer";
  onmessage: ((e: MessageEvent) => void) | null = null;
  onclose: (() => void) | null = null;
  send() {}
  close() {}
}
globalThis.WebSocket = QuietSocket as unknown as typeof WebSocket;
HTMLCanvasElement.prototype.getContext = (() => null) as typeof HTMLCanvasElement.prototype.getContext;
