#!/usr/bin/env python3
"""Draws Confer's source icon (1024x1024 RGBA PNG) with no image library: a rounded blue square
with two overlapping speech circles. `npx tauri icon icons/src/icon.png -o icons` makes the
platform sizes from it."""
import struct
import sys
import zlib

SIZE = 1024


def inside_rounded(x, y, r=200):
    cx = min(max(x, r), SIZE - 1 - r)
    cy = min(max(y, r), SIZE - 1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def pixel(x, y):
    if not inside_rounded(x, y):
        return (0, 0, 0, 0)
    t = y / SIZE
    base = (int(40 + 30 * t), int(90 + 40 * t), int(220 - 40 * t), 255)
    for (cx, cy, rad, colour) in ((420, 450, 230, (255, 255, 255, 255)), (640, 600, 200, (255, 196, 64, 255))):
        if (x - cx) ** 2 + (y - cy) ** 2 <= rad * rad:
            base = colour
    return base


def png(path):
    rows = bytearray()
    for y in range(SIZE):
        rows.append(0)
        for x in range(SIZE):
            rows.extend(pixel(x, y))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows), 9)) + chunk(b"IEND", b""))


png(sys.argv[1] if len(sys.argv) > 1 else "icon.png")
