// Draws I420 frames on a tile's own canvas: WebGL with three single-channel textures and a
// BT.601 (limited range, as openh264 decodes) shader; a 2D canvas with the conversion in JS where
// WebGL is missing. Tiles use these only where the page's shared surface (surface.ts) could not
// be made.
import type { Frame } from "./frames";

const VERTEX = `
attribute vec2 position;
varying vec2 uv;
void main() {
  uv = vec2((position.x + 1.0) * 0.5, (1.0 - position.y) * 0.5);
  gl_Position = vec4(position, 0.0, 1.0);
}`;

const FRAGMENT = `
precision mediump float;
varying vec2 uv;
uniform sampler2D planeY;
uniform sampler2D planeU;
uniform sampler2D planeV;
void main() {
  float y = 1.1643 * (texture2D(planeY, uv).r - 0.0625);
  float u = texture2D(planeU, uv).r - 0.5;
  float v = texture2D(planeV, uv).r - 0.5;
  gl_FragColor = vec4(y + 1.5958 * v, y - 0.39173 * u - 0.81290 * v, y + 2.017 * u, 1.0);
}`;

export interface Renderer {
  /** Shows `frame` (now, or at the next drawing pass: then `onDrawn` says when). */
  draw(frame: Frame): void;
  /** Called with each frame once it is drawn (a frame replaced before its pass never is). */
  onDrawn: ((frame: Frame) => void) | null;
  /** The pixels last drawn, RGBA, top row first (tests read the synthetic pattern from it). */
  snapshot(): { width: number; height: number; rgba: Uint8Array } | null;
  readonly kind: "webgl" | "2d" | "shared-webgl";
  dispose(): void;
}

export function compile(gl: WebGLRenderingContext, type: number, source: string): WebGLShader | null {
  const shader = gl.createShader(type);
  if (!shader) return null;
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  return gl.getShaderParameter(shader, gl.COMPILE_STATUS) ? shader : null;
}

function webglRenderer(canvas: HTMLCanvasElement): Renderer | null {
  const gl = canvas.getContext("webgl", { preserveDrawingBuffer: true, antialias: false, alpha: false });
  if (!gl) return null;
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
  const textures = (["planeY", "planeU", "planeV"] as const).map((name, unit) => {
    const texture = gl.createTexture();
    gl.activeTexture(gl.TEXTURE0 + unit);
    gl.bindTexture(gl.TEXTURE_2D, texture);
    for (const parameter of [gl.TEXTURE_WRAP_S, gl.TEXTURE_WRAP_T]) {
      gl.texParameteri(gl.TEXTURE_2D, parameter, gl.CLAMP_TO_EDGE);
    }
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.LINEAR);
    gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.LINEAR);
    gl.uniform1i(gl.getUniformLocation(program, name), unit);
    return texture;
  });
  let size = { width: 0, height: 0 };
  return {
    kind: "webgl",
    onDrawn: null,
    draw(frame) {
      if (canvas.width !== frame.width || canvas.height !== frame.height) {
        canvas.width = frame.width;
        canvas.height = frame.height;
      }
      const fresh = size.width !== frame.width || size.height !== frame.height;
      const planes: [Uint8Array, number, number][] = [
        [frame.y, frame.width, frame.height],
        [frame.u, frame.width / 2, frame.height / 2],
        [frame.v, frame.width / 2, frame.height / 2],
      ];
      planes.forEach(([data, w, h], unit) => {
        gl.activeTexture(gl.TEXTURE0 + unit);
        gl.bindTexture(gl.TEXTURE_2D, textures[unit] ?? null);
        if (fresh) gl.texImage2D(gl.TEXTURE_2D, 0, gl.LUMINANCE, w, h, 0, gl.LUMINANCE, gl.UNSIGNED_BYTE, data);
        else gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, 0, w, h, gl.LUMINANCE, gl.UNSIGNED_BYTE, data);
      });
      size = { width: frame.width, height: frame.height };
      gl.viewport(0, 0, frame.width, frame.height);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
      this.onDrawn?.(frame);
    },
    snapshot() {
      if (size.width === 0) return null;
      const rgba = new Uint8Array(size.width * size.height * 4);
      gl.readPixels(0, 0, size.width, size.height, gl.RGBA, gl.UNSIGNED_BYTE, rgba);
      return { width: size.width, height: size.height, rgba: topRowFirst(rgba, size.width, size.height) };
    },
    dispose() {
      gl.getExtension("WEBGL_lose_context")?.loseContext();
    },
  };
}

/** RGBA read back from GL (rows from the bottom) with its top row first. */
export function topRowFirst(rgba: Uint8Array, width: number, height: number): Uint8Array {
  const row = width * 4;
  const flipped = new Uint8Array(rgba.length);
  for (let y = 0; y < height; y++) {
    flipped.set(rgba.subarray((height - 1 - y) * row, (height - y) * row), y * row);
  }
  return flipped;
}

/** I420 to RGBA, BT.601 limited range (the 2D fallback, and tests). */
export function i420ToRgba(frame: Frame, out: Uint8ClampedArray): void {
  const { width, height } = frame;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const c = (y >> 1) * (width >> 1) + (x >> 1);
      const luma = 1.1643 * ((frame.y[y * width + x] ?? 0) - 16);
      const u = (frame.u[c] ?? 128) - 128;
      const v = (frame.v[c] ?? 128) - 128;
      const i = (y * width + x) * 4;
      out[i] = luma + 1.5958 * v;
      out[i + 1] = luma - 0.39173 * u - 0.8129 * v;
      out[i + 2] = luma + 2.017 * u;
      out[i + 3] = 255;
    }
  }
}

function canvasRenderer(canvas: HTMLCanvasElement): Renderer {
  const context = canvas.getContext("2d");
  let image: ImageData | null = null;
  return {
    kind: "2d",
    onDrawn: null,
    draw(frame) {
      if (!context) return;
      if (!image || image.width !== frame.width || image.height !== frame.height) {
        canvas.width = frame.width;
        canvas.height = frame.height;
        image = context.createImageData(frame.width, frame.height);
      }
      i420ToRgba(frame, image.data);
      context.putImageData(image, 0, 0);
      this.onDrawn?.(frame);
    },
    snapshot() {
      if (!image) return null;
      return { width: image.width, height: image.height, rgba: new Uint8Array(image.data) };
    },
    dispose() {},
  };
}

export function createRenderer(canvas: HTMLCanvasElement): Renderer {
  return webglRenderer(canvas) ?? canvasRenderer(canvas);
}
