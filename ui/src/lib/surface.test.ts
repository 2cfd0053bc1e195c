import { describe, expect, it } from "vitest";
import { boundingBox, fitInside, intersect, parseRgb, snapToDevice, toGl } from "./surface";

describe("the shared surface's geometry", () => {
  it("fits a picture inside its tile whole, letterboxed or pillarboxed", () => {
    // 16:9 in a 16:9 tile fills it.
    expect(fitInside([640, 360], [320, 180])).toEqual([1, 1]);
    // 16:9 in a square tile: full width, 9/16 of the height.
    expect(fitInside([640, 360], [400, 400])).toEqual([1, 0.5625]);
    // 4:3 in a 16:9 tile: full height, 3/4 of 16/9 of the width.
    const [w, h] = fitInside([640, 480], [1600, 900]);
    expect(h).toBe(1);
    expect(w).toBeCloseTo(0.75, 6);
    // Nothing known yet: the whole tile (never a division by zero).
    expect(fitInside([0, 0], [320, 180])).toEqual([1, 1]);
    expect(fitInside([640, 360], [0, 180])).toEqual([1, 1]);
  });

  it("clips a tile to what of it is on screen", () => {
    const viewport = { left: 0, top: 0, width: 1200, height: 760 };
    expect(intersect({ left: 100, top: 50, width: 320, height: 180 }, viewport)).toEqual({
      left: 100,
      top: 50,
      width: 320,
      height: 180,
    });
    // Scrolled half out of the top.
    expect(intersect({ left: 100, top: -90, width: 320, height: 180 }, viewport)).toEqual({
      left: 100,
      top: 0,
      width: 320,
      height: 90,
    });
    // Wholly out: empty.
    const gone = intersect({ left: 1300, top: 0, width: 320, height: 180 }, viewport);
    expect(gone.width).toBe(0);
  });

  it("turns a CSS rectangle into device pixels with GL's origin at the bottom", () => {
    // A 760-pixel-high canvas at ratio 1: a tile at the top has its bottom edge 180 px down.
    expect(toGl({ left: 100, top: 0, width: 320, height: 180 }, 1, 760)).toEqual({
      x: 100,
      y: 580,
      width: 320,
      height: 180,
    });
    // Ratio 2 (a HiDPI screen): everything doubles, the canvas too.
    expect(toGl({ left: 100, top: 0, width: 320, height: 180 }, 2, 1520)).toEqual({
      x: 200,
      y: 1160,
      width: 640,
      height: 360,
    });
    // Fractional CSS positions: the edges round, so neighbours meet without a gap or overlap.
    const a = toGl({ left: 0.4, top: 0, width: 100.3, height: 10 }, 1.5, 100);
    const b = toGl({ left: 100.7, top: 0, width: 50, height: 10 }, 1.5, 100);
    expect(a.x + a.width).toBe(b.x);
  });
});

describe("the shared surface's box", () => {
  it("covers the tiles it draws, in whole device pixels", () => {
    expect(boundingBox([])).toBeNull();
    const box = boundingBox([
      { left: 10, top: 20, width: 100, height: 50 },
      { left: 120, top: 5, width: 30, height: 30 },
    ]);
    expect(box).toEqual({ left: 10, top: 5, width: 140, height: 65 });
    // At 1.5 a fractional box grows outwards to the device pixels it touches.
    expect(snapToDevice({ left: 10.5, top: 0.2, width: 10, height: 10 }, 1.5)).toEqual({
      left: 15 / 1.5,
      top: 0,
      width: (31 - 15) / 1.5,
      height: 16 / 1.5,
    });
  });

  it("reads the page's colour as the browser gives it", () => {
    expect(parseRgb("rgb(17, 21, 31)")).toEqual([17 / 255, 21 / 255, 31 / 255]);
    expect(parseRgb("rgba(255, 0, 0, 0.5)")).toEqual([1, 0, 0]);
    expect(parseRgb("transparent")).toEqual([0, 0, 0]);
  });
});
