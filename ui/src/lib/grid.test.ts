import { describe, expect, it } from "vitest";
import { gridLayout } from "./grid";

describe("the tile grid", () => {
  it("gives one tile the whole width of a wide area", () => {
    const g = gridLayout(1, 1600, 900, 16 / 9, 0);
    expect(g).toMatchObject({ columns: 1, rows: 1, tileWidth: 1600, tileHeight: 900 });
  });

  it("puts 2 side by side and 4 in a square in a 16:9 area", () => {
    expect(gridLayout(2, 1600, 900).columns).toBe(2);
    expect(gridLayout(4, 1600, 900)).toMatchObject({ columns: 2, rows: 2 });
  });

  it("fits 9 tiles (8 remote and self) inside the area", () => {
    const g = gridLayout(9, 1200, 700);
    expect(g.columns * g.rows).toBeGreaterThanOrEqual(9);
    expect(g.columns * g.tileWidth + (g.columns - 1) * 8).toBeLessThanOrEqual(1200);
    expect(g.rows * g.tileHeight + (g.rows - 1) * 8).toBeLessThanOrEqual(700);
    expect(g.tileWidth).toBeGreaterThan(300);
  });

  it("stacks tiles in a tall, narrow area", () => {
    expect(gridLayout(3, 400, 1200).columns).toBe(1);
  });
});
