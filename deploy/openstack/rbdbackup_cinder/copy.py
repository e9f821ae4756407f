"""A volume file to and from an `rbd export-diff` (v1) stream: the driver's chunked copy of volumes that
are not RBD, and of Cinder snapshots, as Ceph's driver copies them (its _transfer_data), but sparse.

send(): the volume file's first `length` bytes as a diff from creation — 's' the length, a 'w' record
per chunk that is not all zeros (zero chunks are left out: the backup's base image reads zeros there),
'e'. A file shorter than `length` reads as zeros past its end.

receive(): a stream onto a volume file from its start — every byte of the target is written: the
records' data, zeros for 'z' records and for what no record names, and zeros from the stream's size to
the target's length (a target larger than the backup gets its tail zeroed, as Ceph's driver discards
it). A stream larger than the target, or malformed, raises CopyError before or where it goes wrong.
"""

from __future__ import annotations

import struct
from typing import IO

CHUNK = 4 << 20
BANNER = b"rbd diff v1\n"
_ZEROS = bytes(CHUNK)


class CopyError(Exception):
    pass


def _read_full(f, n: int) -> bytes:
    """Up to n bytes (fewer only at the end of the file)."""
    parts = []
    while n > 0:
        b = f.read(n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def send(volume_file, length: int, out: IO[bytes], chunk: int = CHUNK) -> int:
    """Writes the stream of volume_file's first `length` bytes to `out`; returns the data bytes sent."""
    volume_file.seek(0)
    out.write(BANNER)
    out.write(b"s" + struct.pack("<Q", length))
    sent = 0
    off = 0
    while off < length:
        n = min(chunk, length - off)
        data = _read_full(volume_file, n)
        if not data:
            break  # the file ends before `length`: the rest reads as zeros
        if data != _ZEROS[: len(data)]:
            out.write(b"w" + struct.pack("<QQ", off, len(data)))
            out.write(data)
            sent += len(data)
        off += len(data)
    out.write(b"e")
    out.flush()
    return sent


def _exact(src: IO[bytes], n: int, what: str) -> bytes:
    b = _read_full(src, n)
    if len(b) != n:
        raise CopyError(f"the backup's stream ended inside {what}")
    return b


def _zeros(dst, n: int) -> None:
    while n > 0:
        k = min(n, CHUNK)
        dst.write(_ZEROS[:k])
        n -= k


def receive(src: IO[bytes], volume_file, target_length: int) -> int:
    """Applies the stream from `src` over volume_file (every byte of its first target_length written);
    returns the backup's size (its 's' record)."""
    if _exact(src, len(BANNER), "its banner") != BANNER:
        raise CopyError("the backup's stream is not an rbd diff v1 stream")
    volume_file.seek(0)
    pos = 0
    size = None
    while True:
        tag = _exact(src, 1, "a record tag")
        if tag in (b"f", b"t"):
            (n,) = struct.unpack("<I", _exact(src, 4, "a snapshot name's length"))
            _exact(src, n, "a snapshot name")
        elif tag == b"s":
            (size,) = struct.unpack("<Q", _exact(src, 8, "the size record"))
            if size > target_length:
                raise CopyError(f"the backup holds {size} bytes, more than the target's {target_length}")
        elif tag in (b"w", b"z"):
            off, n = struct.unpack("<QQ", _exact(src, 16, "an extent record"))
            if size is None or off < pos or off + n > size:
                raise CopyError(f"extent {off}+{n} is out of order or past the backup's size")
            _zeros(volume_file, off - pos)
            if tag == b"w":
                left = n
                while left > 0:
                    k = min(left, CHUNK)
                    volume_file.write(_exact(src, k, "an extent's data"))
                    left -= k
            else:
                _zeros(volume_file, n)
            pos = off + n
        elif tag == b"e":
            break
        else:
            raise CopyError(f"unknown record {tag!r} in the backup's stream")
    if size is None:
        raise CopyError("the backup's stream has no size record")
    _zeros(volume_file, target_length - pos)
    volume_file.flush()
    return size
