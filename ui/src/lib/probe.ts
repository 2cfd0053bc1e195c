// What tests and the benchmark read from the running page (through WebDriver): per tile, the
// frames drawn and the pixels last drawn. Nothing here changes what the user sees.
import type { Renderer } from "./renderer";
import { feedStatus } from "./frames";
import { setSurfaceEnabled, surfaceStatus } from "./surface";

export interface TileProbe {
  drawn: number;
  /** Capture (or arrival at the shell) to drawn, ms, for the last frames drawn. */
  latencies: number[];
  renderer: Renderer;
  lastSeq: number;
}

export const tiles = new Map<string, TileProbe>();

/** Each participant's decoded frame rate, from the engine's last statistics. */
export const decodedRates = new Map<string, number>();

declare global {
  interface Window {
    __confer?: {
      tiles: () => { id: string; drawn: number; kind: string }[];
      feed: () => typeof feedStatus;
      surface: () => typeof surfaceStatus;
      /**
       * Animation frames the page has had since the first call (which starts counting): how
       * often the webview composites, whatever draws.
       */
      animationFrames: () => number;
      /** Tiles made from now on draw on the shared surface (`true`, the default) or alone. */
      useSurface: (on: boolean) => void;
      latencies: (id: string) => number[];
      decoded: () => Record<string, number>;
      /** `shared`: tiles on the page's one surface (default), or each on its own canvas. */
      bench?: (
        count: number,
        fps: number,
        width: number,
        height: number,
        seconds: number,
        shared?: boolean,
      ) => Promise<void>;
      snapshot: (id: string) => { width: number; height: number; rgba: string } | null;
    };
  }
}

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

let animationFrames: number | null = null;

export function installProbe(): void {
  window.__confer = {
    feed: () => ({ ...feedStatus, perTile: { ...feedStatus.perTile } }),
    surface: () => ({ ...surfaceStatus }),
    useSurface: (on) => setSurfaceEnabled(on),
    animationFrames: () => {
      if (animationFrames === null) {
        animationFrames = 0;
        const count = () => {
          animationFrames = (animationFrames ?? 0) + 1;
          requestAnimationFrame(count);
        };
        requestAnimationFrame(count);
      }
      return animationFrames;
    },
    latencies: (id) => [...(tiles.get(id)?.latencies ?? [])],
    decoded: () => Object.fromEntries(decodedRates),
    tiles: () => [...tiles].map(([id, t]) => ({ id, drawn: t.drawn, kind: t.renderer.kind })),
    snapshot: (id) => {
      const shot = tiles.get(id)?.renderer.snapshot();
      return shot ? { width: shot.width, height: shot.height, rgba: base64(shot.rgba) } : null;
    },
  };
}

/** Keeps the last 3000 latency samples of a tile. */
export function recordLatency(probe: TileProbe, capturedUs: number): void {
  if (capturedUs <= 0) return;
  probe.latencies.push(Date.now() - capturedUs / 1000);
  if (probe.latencies.length > 3000) probe.latencies.splice(0, probe.latencies.length - 3000);
}
