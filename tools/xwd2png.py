#!/usr/bin/env python3
"""Turns an X window dump (xwd -root, 24-bit TrueColor at 24 or 32 bits per pixel ZPixmap, as Xvfb gives) into a PNG,
with no image library: `xwd -root -display :N | tools/xwd2png.py out.png [x y w h]`.
Used to take the README's screenshots of the app running under Xvfb."""
import struct
import sys
import zlib


def main():
    data = sys.stdin.buffer.read()
    header = struct.unpack(">25I", data[:100])
    header_size, version, pixmap_format, depth, width, height = header[:6]
    byte_order, bits_per_pixel, bytes_per_line = header[7], header[11], header[12]
    ncolors = header[19]
    if version != 7 or pixmap_format != 2 or bits_per_pixel not in (24, 32):
        sys.exit(f"unsupported dump: version {version}, format {pixmap_format}, {bits_per_pixel} bpp")
    pixels = data[header_size + ncolors * 12:]
    x0, y0, w, h = (int(v) for v in sys.argv[2:6]) if len(sys.argv) >= 6 else (0, 0, width, height)
    rows = bytearray()
    for y in range(y0, y0 + h):
        rows.append(0)
        line = pixels[y * bytes_per_line:(y + 1) * bytes_per_line]
        for x in range(x0, x0 + w):
            step = bits_per_pixel // 8
            p = line[x * step:x * step + step]
            b, g, r = (p[0], p[1], p[2]) if byte_order == 0 else (p[-1], p[-2], p[-3])
            rows.extend((r, g, b))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    with open(sys.argv[1], "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n")
        out.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        out.write(chunk(b"IDAT", zlib.compress(bytes(rows), 9)))
        out.write(chunk(b"IEND", b""))


main()
