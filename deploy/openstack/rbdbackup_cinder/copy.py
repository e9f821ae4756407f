"""A volume file to and from an `rbd export-diff` (v1) stream: the driver's chunked copy of volumes that
are not RBD, and of Cinder snapshots, as Ceph's driver copies them (its _transfer_data), but sparse.

send(): the volume file's first `length` bytes as a diff from creation — 's' the length, a 'w' record
per chunk that is not all zeros (zero chunks are left out: the backup's base image reads zeros there),
'e'. A file shorter than `length` reads as zeros past its end. After KEEPALIVE_S without a record (a
long run of zeros), the next chunk is sent even if it is all zeros: rbdbackup fails an import whose
caller sends nothing for 10 minutes.

receive(): a stream onto a volume file — every byte of the target is written: the records' data as
they come, then (after 'e', so that the stream is read as fast as it comes: rbdbackup fails an export
whose caller reads nothing for 10 minutes) zeros for 'z' records, for what no record names and from the
stream's size to the target's length (a target larger than the backup gets its tail zeroed, as Ceph's
driver discards it) — by the device (BLKZEROOUT) or a punched hole in a file where it can, so that a
large sparse restore is not a long write of zeros after its stream. A stream larger than the target, or malformed, raises CopyError where it goes
wrong.

Both check `stop()` at every chunk (CopyError "stopped" when it says so).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import stat
import struct
import time
from typing import IO, Callable, List, Tuple

CHUNK = 4 << 20
BANNER = b"rbd diff v1\n"
_ZEROS = bytes(CHUNK)
KEEPALIVE_S = 60.0


def _never() -> bool:
    return False


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


def send(
    volume_file,
    length: int,
    out: IO[bytes],
    chunk: int = CHUNK,
    stop: Callable[[], bool] = _never,
    keepalive_s: float = KEEPALIVE_S,
) -> int:
    """Writes the stream of volume_file's first `length` bytes to `out`; returns the data bytes sent."""
    volume_file.seek(0)
    out.write(BANNER)
    out.write(b"s" + struct.pack("<Q", length))
    sent = 0
    off = 0
    last = time.monotonic()
    while off < length:
        if stop():
            raise CopyError("stopped")
        n = min(chunk, length - off)
        data = _read_full(volume_file, n)
        if not data:
            break  # the file ends before `length`: the rest reads as zeros
        if data != _ZEROS[: len(data)] or time.monotonic() - last >= keepalive_s:
            out.write(b"w" + struct.pack("<QQ", off, len(data)))
            out.write(data)
            sent += len(data)
            last = time.monotonic()
        off += len(data)
    out.write(b"e")
    out.flush()
    return sent


def _exact(src: IO[bytes], n: int, what: str) -> bytes:
    b = _read_full(src, n)
    if len(b) != n:
        raise CopyError(f"the backup's stream ended inside {what}")
    return b


# ioctl(BLKZEROOUT): a block device zeroes a range itself (_IO(0x12, 127)); fallocate's flags.
BLKZEROOUT = 0x127F
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
_libc = None


def _punch(fd: int, off: int, n: int) -> bool:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return _libc.fallocate(fd, FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE, off, n) == 0


def _zero_fast(dst, off: int, n: int) -> bool:
    """Zeroes the range without writing it, when the target can: a block device (BLKZEROOUT) or a regular
    file (a punched hole, the file grown to cover it). False when it cannot (the caller writes zeros)."""
    try:
        fd = dst.fileno()
        mode = os.fstat(fd).st_mode
    except (AttributeError, OSError, ValueError):
        return False
    try:
        if stat.S_ISBLK(mode):
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", off, n))
            return True
        if stat.S_ISREG(mode):
            dst.flush()
            if not _punch(fd, off, n):
                return False
            if os.fstat(fd).st_size < off + n:
                os.ftruncate(fd, off + n)
            return True
    except OSError:
        return False
    return False


def _zeros(dst, off: int, n: int, stop: Callable[[], bool]) -> None:
    if n > 0 and _zero_fast(dst, off, n):
        return
    dst.seek(off)
    while n > 0:
        if stop():
            raise CopyError("stopped")
        k = min(n, CHUNK)
        dst.write(_ZEROS[:k])
        n -= k


def receive(src: IO[bytes], volume_file, target_length: int, stop: Callable[[], bool] = _never) -> int:
    """Applies the stream from `src` over volume_file (every byte of its first target_length written);
    returns the backup's size (its 's' record)."""
    if _exact(src, len(BANNER), "its banner") != BANNER:
        raise CopyError("the backup's stream is not an rbd diff v1 stream")
    pos = 0
    size = None
    # What is zeroed after the stream: (offset, length), ascending, adjacent ones merged.
    holes: List[Tuple[int, int]] = []

    def hole(off: int, n: int) -> None:
        if n <= 0:
            return
        if holes and holes[-1][0] + holes[-1][1] == off:
            holes[-1] = (holes[-1][0], holes[-1][1] + n)
        else:
            holes.append((off, n))

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
            hole(pos, off - pos)
            if tag == b"w":
                volume_file.seek(off)
                left = n
                while left > 0:
                    if stop():
                        raise CopyError("stopped")
                    k = min(left, CHUNK)
                    volume_file.write(_exact(src, k, "an extent's data"))
                    left -= k
            else:
                hole(off, n)
            pos = off + n
        elif tag == b"e":
            break
        else:
            raise CopyError(f"unknown record {tag!r} in the backup's stream")
    if size is None:
        raise CopyError("the backup's stream has no size record")
    hole(pos, target_length - pos)
    for off, n in holes:
        _zeros(volume_file, off, n, stop)
    volume_file.flush()
    return size
