// One WebGL context for every video tile of the page. An opaque canvas covers the tiles'
// bounding box, under the page's positioned content (it is the body's first child), painted in
// the page's colour between them; each tile that shows video lets it through (its own background
// transparent; nothing else may lie under a tile's box) and the surface draws the tile's
// newest frame at the tile's place, fitted (contain) with the tile's colour around it and its
// rounded corners. Frames are uploaded into each tile's three textures in place as they arrive,
// and drawn in one pass per animation frame; a pass draws only the tiles with a new frame, unless
// a tile moved, came or went (then it clears and draws them all). One context instead of one per tile: browsers keep only so many WebGL
// contexts alive (WebKit 16; beyond that the oldest is lost, and with it a tile's video), and
// the page composites one layer, redrawn at most once per display frame.
import type { Frame } from "./frames";
import { compile, topRowFirst, type Renderer } from "./renderer";

const VERTEX = `
attribute vec2 position;
uniform vec2 fit;
varying vec2 local;
varying vec2 uv;
void main() {
  local = vec2((position.x + 1.0) * 0.5, (1.0 - position.y) * 0.5);
  uv = (local - 0.5) / fit + 0.5;
  gl_Position = vec4(position, 0.0, 1.0);
}`;

// BT.601 limited range (as openh264 decodes); outside the fitted picture, the tile's colour;
// outside the rounded corners, the page's (as the tile's own corners show it).
const FRAGMENT = `
#ifdef GL_FRAGMENT_PRECISION_HIGH
precision highp float;
#else
precision mediump float;
#endif
varying vec2 local;
varying vec2 uv;
uniform sampler2D planeY;
uniform sampler2D planeU;
uniform sampler2D planeV;
uniform vec2 size;
uniform float radius;
uniform vec3 background;
uniform vec3 page;
void main() {
  vec2 p = local * size;
  vec2 corner = max(vec2(radius) - p, p - (size - vec2(radius)));
  if (corner.x > 0.0 && corner.y > 0.0 && length(corner) > radius) {
    gl_FragColor = vec4(page, 1.0);
    return;
  }
  if (uv.x < 0.0 || uv.x > 1.0 || uv.y < 0.0 || uv.y > 1.0) {
    gl_FragColor = vec4(background, 1.0);
    return;
  }
  float y = 1.1643 * (texture2D(planeY, uv).r - 0.0625);
  float u = texture2D(planeU, uv).r - 0.5;
  float v = texture2D(planeV, uv).r - 0.5;
  gl_FragColor = vec4(y + 1.5958 * v, y - 0.39173 * u - 0.81290 * v, y + 2.017 * u, 1.0);
}`;

/** A rectangle in CSS pixels, viewport coordinates. */
export interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/** A rectangle in the canvas's device pixels, GL's way up (origin bottom left). */
export interface GlRect {
  x: number;
  y: number;
  width: number;
  height: number;
}

/** The picture's share of the tile on each axis when fitted inside it whole (contain): ≤ 1. */
export function fitInside(picture: [number, number], tile: [number, number]): [number, number] {
  const [pw, ph] = picture;
  const [tw, th] = tile;
  if (pw <= 0 || ph <= 0 || tw <= 0 || th <= 0) return [1, 1];
  const scale = Math.min(tw / pw, th / ph);
  return [Math.min(1, (pw * scale) / tw), Math.min(1, (ph * scale) / th)];
}

/** `a` ∩ `b` (empty: zero width or height). */
export function intersect(a: Rect, b: Rect): Rect {
  const left = Math.max(a.left, b.left);
  const top = Math.max(a.top, b.top);
  const right = Math.min(a.left + a.width, b.left + b.width);
  const bottom = Math.min(a.top + a.height, b.top + b.height);
  return { left, top, width: Math.max(0, right - left), height: Math.max(0, bottom - top) };
}

/** The smallest rectangle holding all of `rects` (`null` for none). */
export function boundingBox(rects: Rect[]): Rect | null {
  if (rects.length === 0) return null;
  const left = Math.min(...rects.map((r) => r.left));
  const top = Math.min(...rects.map((r) => r.top));
  const right = Math.max(...rects.map((r) => r.left + r.width));
  const bottom = Math.max(...rects.map((r) => r.top + r.height));
  return { left, top, width: right - left, height: bottom - top };
}

/** `rect` grown to whole device pixels (so the canvas's pixels are the screen's). */
export function snapToDevice(rect: Rect, ratio: number): Rect {
  const left = Math.floor(rect.left * ratio);
  const top = Math.floor(rect.top * ratio);
  const right = Math.ceil((rect.left + rect.width) * ratio);
  const bottom = Math.ceil((rect.top + rect.height) * ratio);
  return { left: left / ratio, top: top / ratio, width: (right - left) / ratio, height: (bottom - top) / ratio };
}

/** A CSS colour as `getComputedStyle` gives it (`rgb(17, 21, 31)`) as RGB 0–1; black if not. */
export function parseRgb(css: string): [number, number, number] {
  const parts = /^rgba?\(\s*(\d+)[,\s]+(\d+)[,\s]+(\d+)/.exec(css);
  if (!parts) return [0, 0, 0];
  return [Number(parts[1]) / 255, Number(parts[2]) / 255, Number(parts[3]) / 255];
}

/** A CSS-pixel rectangle of the viewport as device pixels of a canvas `canvasHeight` high. */
export function toGl(rect: Rect, ratio: number, canvasHeight: number): GlRect {
  const x = Math.round(rect.left * ratio);
  const right = Math.round((rect.left + rect.width) * ratio);
  const top = Math.round(rect.top * ratio);
  const bottom = Math.round((rect.top + rect.height) * ratio);
  return { x, y: canvasHeight - bottom, width: right - x, height: bottom - top };
}

/** What a test or the benchmark reads of the surface (`window.__confer.surface()`). */
export const surfaceStatus = {
  /** Drawing passes. */
  passes: 0,
  /** Frames uploaded, and frames replaced by a newer one before a pass could draw them. */
  uploaded: 0,
  replaced: 0,
  /** Tiles drawn (a pass draws those with a new frame, or all when one moved). */
  tilesDrawn: 0,
  contextsLost: 0,
};

interface GlState {
  gl: WebGLRenderingContext;
  /** How a plane is stored: one-channel R8 (WebGL 2), or LUMINANCE where only WebGL 1 is. */
  plane: { internal: number; format: number };
  /** The page's background (RGB, 0–1): the canvas's colour between and around the tiles. */
  page: [number, number, number];
  program: WebGLProgram;
  uniforms: {
    fit: WebGLUniformLocation | null;
    size: WebGLUniformLocation | null;
    radius: WebGLUniformLocation | null;
    background: WebGLUniformLocation | null;
  };
}

/** A tile's part: where it is, what it last got, its textures. */
class Slot implements Renderer {
  readonly kind = "shared-webgl" as const;
  onDrawn: ((frame: Frame) => void) | null = null;
  /** Told when the GL context is lost (`true`: nothing of this tile is drawn) and restored. */
  onLost: ((lost: boolean) => void) | null = null;
  visible = true;
  /** Uploaded and not yet drawn. */
  pending: Frame | null = null;
  /** The frame whose planes the textures hold. */
  shown: { width: number; height: number } | null = null;
  /** Where the last pass drew it (to see that it moved), or `null`. */
  placed: string | null = null;
  textures: (WebGLTexture | null)[] = [];
  textureSize = { width: 0, height: 0 };
  clip: HTMLElement | null;

  constructor(
    private readonly surface: VideoSurface,
    readonly element: HTMLElement,
    readonly radius: number,
    readonly background: [number, number, number],
  ) {
    this.clip = clippingAncestor(element);
  }

  draw(frame: Frame): void {
    this.surface.take(this, frame);
  }

  show(visible: boolean): void {
    if (visible === this.visible) return;
    this.visible = visible;
    this.surface.redrawAll();
  }

  snapshot() {
    return this.surface.snapshot(this);
  }

  dispose(): void {
    this.surface.detach(this);
  }
}

/** The nearest ancestor that clips its content (a scrolling panel), if any. */
function clippingAncestor(element: HTMLElement): HTMLElement | null {
  for (let e = element.parentElement; e && e !== document.body; e = e.parentElement) {
    const style = getComputedStyle(e);
    if (style.overflowX !== "visible" || style.overflowY !== "visible") return e;
  }
  return null;
}

/** The element's padding box (inside its border), viewport coordinates. */
function innerRect(element: HTMLElement): Rect {
  const outer = element.getBoundingClientRect();
  return {
    left: outer.left + element.clientLeft,
    top: outer.top + element.clientTop,
    width: element.clientWidth,
    height: element.clientHeight,
  };
}

export class VideoSurface {
  private state: GlState | null = null;
  private slots = new Set<Slot>();
  private animation = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Where the canvas is now (its box and the pixel ratio), to see that it must move. */
  private placement = "";
  private resize = new ResizeObserver(() => this.schedule());
  private lost = false;
  /** The next pass clears and draws every tile (one came, went or was hidden). */
  private everything = true;

  private constructor(private readonly canvas: HTMLCanvasElement) {
    canvas.addEventListener("webglcontextlost", (event) => {
      event.preventDefault();
      surfaceStatus.contextsLost += 1;
      this.lost = true;
      this.state = null;
      // Nothing is drawn until it comes back: the canvas goes, and tiles show their avatars.
      this.canvas.style.display = "none";
      this.placement = "";
      for (const slot of this.slots) {
        slot.textures = [];
        slot.textureSize = { width: 0, height: 0 };
        slot.shown = null;
        slot.placed = null;
        slot.onLost?.(true);
      }
    });
    canvas.addEventListener("webglcontextrestored", () => {
      this.lost = false;
      this.state = this.setUp();
      for (const slot of this.slots) slot.onLost?.(false);
      this.redrawAll();
    });
    window.addEventListener("resize", () => this.schedule());
    // Any scrolling (the page's or a panel's) moves tiles.
    document.addEventListener("scroll", () => this.schedule(), { capture: true, passive: true });
    // Tiles also move with no resize, scroll or frame of their own (a banner above the grid, a
    // tile before them gone, every camera off): a pass four times a second looks where they
    // are (one that finds nothing moved and no new frame draws nothing).
    setInterval(() => {
      if (this.slots.size > 0) this.schedule();
    }, 250);
  }

  /** The page's surface, made on first use; `null` where WebGL is missing (tiles then draw alone). */
  static get(): VideoSurface | null {
    if (!enabled) return null;
    if (shared !== undefined) return shared;
    const canvas = document.createElement("canvas");
    canvas.className = "video-surface";
    canvas.setAttribute("aria-hidden", "true");
    Object.assign(canvas.style, { position: "fixed", display: "none", pointerEvents: "none" });
    const surface = new VideoSurface(canvas);
    surface.state = surface.setUp();
    if (!surface.state) {
      shared = null;
      return null;
    }
    document.body.prepend(canvas);
    shared = surface;
    return surface;
  }

  private setUp(): GlState | null {
    // Preserved: a pass draws only the tiles that changed, over what the last passes drew (on a
    // machine without a GPU, converting every tile's pixels again per pass cost more than the
    // compositor's copy of the buffer).
    const options: WebGLContextAttributes = { alpha: false, antialias: false, depth: false, stencil: false, preserveDrawingBuffer: true };
    // WebGL 2 stores a plane as R8, uploaded as is; WebGL 1's LUMINANCE is emulated by ANGLE
    // with a conversion of every byte on upload (a fifth of the page's CPU in a profile).
    const gl2 = this.canvas.getContext("webgl2", options);
    const gl = gl2 ?? this.canvas.getContext("webgl", options);
    if (!gl) return null;
    const plane = gl2 ? { internal: gl2.R8, format: gl2.RED } : { internal: gl.LUMINANCE, format: gl.LUMINANCE };
    const vertex = compile(gl, gl.VERTEX_SHADER, VERTEX);
    const fragment = compile(gl, gl.FRAGMENT_SHADER, FRAGMENT);
    const program = gl.createProgram();
    if (!vertex || !fragment || !program) return null;
    gl.attachShader(program, vertex);
    gl.attachShader(program, fragment);
    gl.linkProgram(program);
    if (!gl.getProgramParameter(program, gl.LINK_STATUS)) return null;
    gl.useProgram(program);
    const buffer = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, buffer);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array([-1, -1, 1, -1, -1, 1, 1, 1]), gl.STATIC_DRAW);
    const position = gl.getAttribLocation(program, "position");
    gl.enableVertexAttribArray(position);
    gl.vertexAttribPointer(position, 2, gl.FLOAT, false, 0, 0);
    gl.pixelStorei(gl.UNPACK_ALIGNMENT, 1);
    gl.pixelStorei(gl.PACK_ALIGNMENT, 1);
    (["planeY", "planeU", "planeV"] as const).forEach((name, unit) =>
      gl.uniform1i(gl.getUniformLocation(program, name), unit),
    );
    const page = parseRgb(getComputedStyle(document.documentElement).backgroundColor);
    gl.uniform3f(gl.getUniformLocation(program, "page"), ...page);
    return {
      gl,
      plane,
      page,
      program,
      uniforms: {
        fit: gl.getUniformLocation(program, "fit"),
        size: gl.getUniformLocation(program, "size"),
        radius: gl.getUniformLocation(program, "radius"),
        background: gl.getUniformLocation(program, "background"),
      },
    };
  }

  /**
   * A tile's renderer: `element`'s padding box shows the frames given to it, with corners of
   * `radius` CSS pixels and `background` (RGB, 0–1) around a picture of another shape.
   */
  attach(element: HTMLElement, radius: number, background: [number, number, number]): Renderer & {
    show(visible: boolean): void;
    onLost: ((lost: boolean) => void) | null;
  } {
    const slot = new Slot(this, element, radius, background);
    this.slots.add(slot);
    this.resize.observe(element);
    this.redrawAll();
    return slot;
  }

  detach(slot: Slot): void {
    if (!this.slots.delete(slot)) return;
    this.resize.unobserve(slot.element);
    const gl = this.state?.gl;
    if (gl) for (const texture of slot.textures) gl.deleteTexture(texture);
    slot.textures = [];
    this.redrawAll();
  }

  /**
   * Uploads a tile's frame now, as it arrives, and draws it at the next pass: the pass runs in
   * the webview's rendering update, which must stay short (with the uploads in it, the 4-party
   * desktop bench's page was composited 7.7 times a second against 14.4 with a canvas per
   * tile; with them here, 10.0 against 13.1, and as many frames shown).
   */
  take(slot: Slot, frame: Frame): void {
    const state = this.state;
    if (state) this.upload(state, slot, frame);
    if (slot.pending) surfaceStatus.replaced += 1;
    slot.pending = frame;
    this.schedule();
  }

  /** Clears and draws every tile at the next pass. */
  redrawAll(): void {
    this.everything = true;
    this.schedule();
  }

  /** Draws on the next animation frame (or after 24 ms where the webview gives none). */
  schedule(): void {
    if (this.animation !== 0 || this.lost) return;
    this.animation = requestAnimationFrame(() => this.pass());
    this.timer = setTimeout(() => this.pass(), 24);
  }

  private pass(): void {
    cancelAnimationFrame(this.animation);
    if (this.timer !== null) clearTimeout(this.timer);
    this.animation = 0;
    this.timer = null;
    const state = this.state;
    if (!state) return;
    surfaceStatus.passes += 1;
    const { gl } = state;
    const ratio = window.devicePixelRatio || 1;
    const viewport: Rect = { left: 0, top: 0, width: window.innerWidth, height: window.innerHeight };
    const drawn: [Slot, Frame][] = [];
    const seen: { slot: Slot; fresh: boolean; rect: Rect; visible: Rect }[] = [];
    for (const slot of this.slots) {
      const fresh = slot.pending;
      if (fresh) {
        slot.pending = null;
        drawn.push([slot, fresh]);
      }
      if (slot.visible && slot.shown && slot.element.isConnected) {
        const rect = innerRect(slot.element);
        const clip = slot.clip ? intersect(viewport, innerRect(slot.clip)) : viewport;
        const visible = intersect(rect, clip);
        if (visible.width > 0 && visible.height > 0) {
          seen.push({ slot, fresh: fresh !== null, rect, visible });
          continue;
        }
      }
      // Not drawn now: if it was, its old place must be repainted.
      if (slot.placed !== null) this.everything = true;
      slot.placed = null;
    }
    // The canvas covers the tiles' bounding box only, opaque: the compositor blends nothing and
    // a tile's change damages less of the page.
    const area = boundingBox(seen.map((s) => s.visible));
    const box = area ? snapToDevice(area, ratio) : null;
    const placement = box ? `${box.left},${box.top},${box.width},${box.height},${ratio}` : "";
    if (placement !== this.placement) {
      this.placement = placement;
      this.everything = true;
      if (box) {
        Object.assign(this.canvas.style, {
          display: "block",
          left: `${box.left}px`,
          top: `${box.top}px`,
          width: `${box.width}px`,
          height: `${box.height}px`,
        });
        this.canvas.width = Math.round(box.width * ratio);
        this.canvas.height = Math.round(box.height * ratio);
      } else {
        this.canvas.style.display = "none";
      }
    }
    for (const entry of seen) {
      const key = `${entry.rect.left},${entry.rect.top},${entry.rect.width},${entry.rect.height},${entry.visible.left},${entry.visible.top},${entry.visible.width},${entry.visible.height}`;
      // A tile that moved leaves its old place to repaint: all are redrawn.
      if (key !== entry.slot.placed) this.everything = true;
      entry.slot.placed = key;
    }
    const everything = this.everything;
    this.everything = false;
    if (box) {
      gl.bindFramebuffer(gl.FRAMEBUFFER, null);
      const height = this.canvas.height;
      const local = (r: Rect): Rect => ({ ...r, left: r.left - box.left, top: r.top - box.top });
      if (everything) {
        gl.disable(gl.SCISSOR_TEST);
        gl.clearColor(...state.page, 1);
        gl.clear(gl.COLOR_BUFFER_BIT);
      }
      gl.enable(gl.SCISSOR_TEST);
      for (const { slot, fresh, rect, visible } of seen) {
        const shown = slot.shown;
        if ((!everything && !fresh) || !shown) continue;
        const place = toGl(local(rect), ratio, height);
        const scissor = toGl(local(visible), ratio, height);
        gl.scissor(scissor.x, scissor.y, scissor.width, scissor.height);
        gl.viewport(place.x, place.y, place.width, place.height);
        const fit = fitInside([shown.width, shown.height], [place.width, place.height]);
        this.drawSlot(state, slot, fit, [place.width, place.height], slot.radius * ratio);
        surfaceStatus.tilesDrawn += 1;
      }
    }
    for (const [slot, frame] of drawn) slot.onDrawn?.(frame);
  }

  private upload(state: GlState, slot: Slot, frame: Frame): void {
    const { gl, plane } = state;
    surfaceStatus.uploaded += 1;
    const fresh = slot.textureSize.width !== frame.width || slot.textureSize.height !== frame.height;
    if (slot.textures.length === 0) {
      slot.textures = [0, 1, 2].map(() => {
        const texture = gl.createTexture();
        gl.bindTexture(gl.TEXTURE_2D, texture);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
        gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
        return texture;
      });
    }
    const planes: [Uint8Array, number, number][] = [
      [frame.y, frame.width, frame.height],
      [frame.u, frame.width / 2, frame.height / 2],
      [frame.v, frame.width / 2, frame.height / 2],
    ];
    planes.forEach(([data, w, h], unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, slot.textures[unit] ?? null);
      // In place once the size is known: no reallocation per frame.
      if (fresh) gl.texImage2D(gl.TEXTURE_2D, 0, plane.internal, w, h, 0, plane.format, gl.UNSIGNED_BYTE, data);
      else gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, w, h, plane.format, gl.UNSIGNED_BYTE, data);
    });
    slot.textureSize = { width: frame.width, height: frame.height };
    slot.shown = { width: frame.width, height: frame.height };
  }

  private drawSlot(
    state: GlState,
    slot: Slot,
    fit: [number, number],
    size: [number, number],
    radius: number,
  ): void {
    const { gl, uniforms } = state;
    slot.textures.forEach((texture, unit) => {
      gl.activeTexture(gl.TEXTURE0 + unit);
      gl.bindTexture(gl.TEXTURE_2D, texture);
    });
    gl.uniform2f(uniforms.fit, fit[0], fit[1]);
    gl.uniform2f(uniforms.size, size[0], size[1]);
    gl.uniform1f(uniforms.radius, radius);
    gl.uniform3f(uniforms.background, ...slot.background);
    gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
  }

  /** The slot's last uploaded frame as RGBA, top row first, at the frame's own size. */
  snapshot(slot: Slot): { width: number; height: number; rgba: Uint8Array } | null {
    const state = this.state;
    const shown = slot.shown;
    if (!state || !shown) return null;
    const { gl } = state;
    const { width, height } = shown;
    const target = gl.createTexture();
    gl.activeTexture(gl.TEXTURE3);
    gl.bindTexture(gl.TEXTURE_2D, target);
    gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, width, height, 0, gl.RGBA, gl.UNSIGNED_BYTE, null);
    const framebuffer = gl.createFramebuffer();
    gl.bindFramebuffer(gl.FRAMEBUFFER, framebuffer);
    gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, target, 0);
    gl.disable(gl.SCISSOR_TEST);
    gl.viewport(0, 0, width, height);
    this.drawSlot(state, slot, [1, 1], [width, height], 0);
    const rgba = new Uint8Array(width * height * 4);
    gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, rgba);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.deleteFramebuffer(framebuffer);
    gl.deleteTexture(target);
    return { width, height, rgba: topRowFirst(rgba, width, height) };
  }
}

let shared: VideoSurface | null | undefined;
let enabled = true;

/**
 * Whether tiles made from now on use the shared surface (the benchmark compares: with `false`
 * each tile draws on its own canvas and WebGL context, as before the surface).
 */
export function setSurfaceEnabled(on: boolean): void {
  enabled = on;
}
