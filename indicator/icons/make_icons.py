#!/usr/bin/env python3
"""make_icons.py - draws tf-indicator's four tray icons as PNG files.

The icons are drawn here, from shapes, so their colours are the project's
and do not depend on the desktop's icon theme: a green disc with a check
mark (every builder passes), an amber disc with three dots (something is
building, nothing fails), a red flame (a builder fails: "the farm bursts
into flames") and a grey disc with a bar (a master cannot be reached).
The PNGs are committed; rerun this (stdlib only) after changing a shape:

    python3 indicator/icons/make_icons.py indicator/icons

Each pixel is the average of 4x4 samples, which anti-aliases the edges.
"""

import math
import struct
import sys
import zlib
from pathlib import Path

SIZE = 64
SS = 4  # samples per pixel side

GREEN = (0x2E, 0x9D, 0x3A)
AMBER = (0xE8, 0xA3, 0x00)
RED = (0xD6, 0x1F, 0x1F)
ORANGE = (0xFF, 0x8C, 0x1A)
GREY = (0x8A, 0x8A, 0x8A)
WHITE = (0xFF, 0xFF, 0xFF)


def disc(cx, cy, r):
    return lambda x, y: (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def segment(x0, y0, x1, y1, half_width):
    """A thick line with round ends."""
    def inside(x, y):
        dx, dy = x1 - x0, y1 - y0
        t = max(0.0, min(1.0, ((x - x0) * dx + (y - y0) * dy)
                         / (dx * dx + dy * dy)))
        px, py = x0 + t * dx, y0 + t * dy
        return (x - px) ** 2 + (y - py) ** 2 <= half_width ** 2
    return inside


def flame(cx, cy, r, tip):
    """A teardrop: a disc of radius r at (cx, cy) drawn up to a point at
    height tip, its sides curving in, with a slight lean."""
    def inside(x, y):
        dy = y - cy
        if dy >= 0:
            return (x - cx) ** 2 + dy * dy <= r * r
        h = cy - tip
        f = -dy / h
        if f > 1:
            return False
        lean = 3.0 * math.sin(f * math.pi) * (r / 20.0)
        w = r * (1 - f) ** 1.6 * (1 + 0.25 * math.sin(f * math.pi))
        return abs(x - cx - lean) <= w
    return inside


def render(layers):
    """layers: [(shape, rgb)], later layers on top. Returns RGBA rows."""
    rows = []
    for py in range(SIZE):
        row = bytearray()
        for px in range(SIZE):
            acc = [0.0, 0.0, 0.0, 0.0]
            for sy in range(SS):
                for sx in range(SS):
                    x = px + (sx + 0.5) / SS
                    y = py + (sy + 0.5) / SS
                    colour = None
                    for shape, rgb in layers:
                        if shape(x, y):
                            colour = rgb
                    if colour:
                        acc[0] += colour[0]
                        acc[1] += colour[1]
                        acc[2] += colour[2]
                        acc[3] += 1
            n = acc[3]
            if n:
                row += bytes([round(acc[0] / n), round(acc[1] / n),
                              round(acc[2] / n), round(255 * n / SS ** 2)])
            else:
                row += bytes(4)
        rows.append(bytes(row))
    return rows


def png(rows):
    def chunk(kind, data):
        c = kind + data
        return (struct.pack(">I", len(data)) + c
                + struct.pack(">I", zlib.crc32(c) & 0xFFFFFFFF))
    raw = b"".join(b"\0" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


ICONS = {
    "testfarm-passing": [
        (disc(32, 32, 29), GREEN),
        (segment(18, 33, 28, 43, 4.2), WHITE),
        (segment(28, 43, 46, 22, 4.2), WHITE),
    ],
    "testfarm-building": [
        (disc(32, 32, 29), AMBER),
        (disc(19, 32, 5), WHITE),
        (disc(32, 32, 5), WHITE),
        (disc(45, 32, 5), WHITE),
    ],
    "testfarm-failing": [
        (flame(32, 42, 20, 2), RED),
        (flame(32, 48, 9, 26), ORANGE),
    ],
    "testfarm-unknown": [
        (disc(32, 32, 29), GREY),
        (segment(19, 32, 45, 32, 4.5), WHITE),
    ],
}


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for name, layers in ICONS.items():
        (out / (name + ".png")).write_bytes(png(render(layers)))


if __name__ == "__main__":
    main()
