// The call grid: how many columns and rows for n tiles in a w x h area so tiles of the given
// aspect ratio are as large as possible.

export interface Grid {
  columns: number;
  rows: number;
  tileWidth: number;
  tileHeight: number;
}

export function gridLayout(n: number, width: number, height: number, aspect = 16 / 9, gap = 8): Grid {
  const count = Math.max(1, Math.floor(n));
  let best: Grid = { columns: 1, rows: count, tileWidth: 0, tileHeight: 0 };
  for (let columns = 1; columns <= count; columns++) {
    const rows = Math.ceil(count / columns);
    const cellWidth = (width - gap * (columns - 1)) / columns;
    const cellHeight = (height - gap * (rows - 1)) / rows;
    if (cellWidth <= 0 || cellHeight <= 0) continue;
    const tileWidth = Math.min(cellWidth, cellHeight * aspect);
    const tileHeight = tileWidth / aspect;
    if (tileWidth > best.tileWidth) {
      best = { columns, rows, tileWidth: Math.floor(tileWidth), tileHeight: Math.floor(tileHeight) };
    }
  }
  return best;
}
