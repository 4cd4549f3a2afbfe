"""Media files whose headers claim far more than their bytes hold, made cheaply.

- ``rate_bomb.wav``: 32 KiB of PCM whose header claims a sample rate of 2^31-1 Hz;
- ``sparse_bomb.wav``: a 1 GiB WAV (16 kHz mono, 9.3 hours) made with ``truncate``: the header
  is written, the rest is a hole, so it takes no disk and no time to make;
- ``pixel_bomb.png``: a real, valid 16000x16000 PNG (1-bit grey, all zero) of about 30 KB:
  decoded, it is 256 megapixels.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

GIB = 1 << 30


def wav_header(rate: int, channels: int, bits: int, data_bytes: int) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<IHHIIHH", 16, 1, channels, rate, (rate * block) & 0xFFFFFFFF, block, bits)
    riff = b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
    return riff + b"fmt " + fmt + b"data" + struct.pack("<I", data_bytes)


def rate_bomb(path: Path) -> Path:
    size = 32 * 1024
    path.write_bytes(wav_header(2**31 - 1, 1, 16, size - 44) + bytes(size - 44))
    return path


def sparse_bomb(path: Path) -> Path:
    with open(path, "wb") as fh:
        fh.write(wav_header(16_000, 1, 16, GIB - 44))
    os.truncate(path, GIB)
    return path


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def pixel_bomb(path: Path, side: int = 16_000) -> Path:
    packer = zlib.compressobj(9)
    row = bytes(1 + side // 8)  # filter byte + one bit per pixel
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return path


def make_bombs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return {"rate": rate_bomb(folder / "rate_bomb.wav"), "sparse": sparse_bomb(folder / "sparse_bomb.wav"),
            "pixels": pixel_bomb(folder / "pixel_bomb.png")}
