"""Image dimensions from JPEG/PNG headers, read before anything is decoded.

A 629-byte JPEG may declare 60000 x 60000 pixels: decoding it costs seconds of CPU and gigabytes
of memory. `image_size` reads the size a compressed image declares (JPEG: the first SOFn
segment, PNG: IHDR) in microseconds, touching only the header bytes, so the node can refuse an
image above its `max_image_size` before decoding it, wherever the decode happens (callback or
inference thread). Pure Python + numpy, no decoder involved.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers carrying the image size (every SOFn except DHT C4, JPG C8, DAC CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SEGMENTS = 1000  # a header with more segments before its SOF is not a camera image


class ImageHeaderError(ValueError):
    """The bytes do not start like a JPEG or PNG whose size can be read."""


def _bytes(data: Any) -> memoryview:
    if isinstance(data, np.ndarray):
        return memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
    return memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")


def jpeg_size(buf: memoryview) -> tuple[int, int]:
    """(height, width) from a JPEG's first SOFn segment; ImageHeaderError if it is no complete JPEG."""
    n = len(buf)
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        raise ImageHeaderError("not a JPEG (no SOI marker)")
    i = 2
    for _ in range(_MAX_SEGMENTS):
        while i < n and buf[i] == 0xFF:  # fill bytes before a marker
            i += 1
        if i >= n:
            break
        marker = buf[i]
        i += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # markers without a length
            continue
        if marker == 0xD9 or i + 2 > n:
            break
        length = (buf[i] << 8) | buf[i + 1]
        if length < 2:
            raise ImageHeaderError(f"JPEG segment 0x{marker:02X} has length {length}")
        if marker in _SOF:
            if i + 7 > n:
                break
            h, w = struct.unpack_from(">HH", buf, i + 3)
            if h == 0 or w == 0:
                raise ImageHeaderError("JPEG frame header declares a zero image size")
            if bytes(buf[max(0, n - 64):]).rfind(b"\xff\xd9") < 0:  # a cut-off transfer ends mid-scan
                raise ImageHeaderError("truncated JPEG (no EOI marker at the end)")
            return h, w
        if marker == 0xDA:  # start of scan before any SOF
            raise ImageHeaderError("JPEG has scan data before its frame header")
        i += length
    raise ImageHeaderError("JPEG header ends before a frame header (SOF) gives the image size")


def png_size(buf: memoryview) -> tuple[int, int]:
    """(height, width) from a PNG's IHDR chunk."""
    if len(buf) < 24 or bytes(buf[:8]) != PNG_SIGNATURE or bytes(buf[12:16]) != b"IHDR":
        raise ImageHeaderError("not a PNG with an IHDR chunk")
    w, h = struct.unpack_from(">II", buf, 16)
    return h, w


def image_size(data: Any) -> tuple[int, int]:
    """(height, width) a JPEG or PNG declares (ImageHeaderError if neither can be read)."""
    buf = _bytes(data)
    if len(buf) >= 2 and buf[0] == 0xFF and buf[1] == 0xD8:
        return jpeg_size(buf)
    if len(buf) >= 8 and bytes(buf[:8]) == PNG_SIGNATURE:
        return png_size(buf)
    raise ImageHeaderError("neither a JPEG nor a PNG")


def check_image_size(hw: tuple[int, int], max_wh: tuple[int, int]) -> str | None:
    """Why an image of (height, width) `hw` exceeds `max_wh` = (width, height), else None."""
    h, w = hw
    if h <= 0 or w <= 0:
        return f"declares {w} x {h} pixels"
    if w > max_wh[0] or h > max_wh[1]:
        return f"{w} x {h} pixels > max_image_size {max_wh[0]} x {max_wh[1]}"
    return None
