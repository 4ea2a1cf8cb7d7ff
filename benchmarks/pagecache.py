"""The page cache over a bench city's files: made warm (or cold) before each measurement.

Each measurement reads the same files. Left alone, the first reader of a size — the
decode floor — found them partly on disk (this VM's cache gives back memory it has not
used for a while: 1.5 of the 24 km city's 2.7 GB were cached ~40 minutes after a run)
and left them cached for the payesh flow right after it: the floor then timed disk
reads the flow did not (24 km: 8.35 s from a cold cache, 6.19–6.42 s warm). Now every
measurement starts on the same state — warm by default, cold with ``--cold`` — and the
share of the files cached at its start is recorded with it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
from pathlib import Path

_PAGE = mmap.PAGESIZE
_CHUNK = 8 << 20


def city_files(catalog: str | os.PathLike[str]) -> list[Path]:
    """Every file of the city's local catalog (the folder of ``catalog``)."""
    return sorted(p for p in Path(catalog).parent.rglob("*") if p.is_file())


def warm(paths: list[Path]) -> int:
    """Read every file once, so the page cache holds them; returns the bytes read."""
    total = 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
    return total


def evict(paths: list[Path]) -> None:
    """Ask the kernel to drop the files' clean pages (``POSIX_FADV_DONTNEED``)."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(paths: list[Path]) -> float | None:
    """Share of the files' pages in the page cache (``mincore``); ``None`` where the
    system does not say (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        mincore = libc.mincore
    except (OSError, AttributeError):
        return None
    mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    resident = pages = 0
    for path in paths:
        size = path.stat().st_size
        if size == 0:
            continue
        n = (size + _PAGE - 1) // _PAGE
        with open(path, "rb") as f, mmap.mmap(f.fileno(), size, access=mmap.ACCESS_COPY) as m:
            vec = ctypes.create_string_buffer(n)
            start = ctypes.c_char.from_buffer(m)  # maps the file, reads nothing
            failed = mincore(ctypes.c_void_p(ctypes.addressof(start)), size, vec) != 0
            del start  # the mapping closes only once nothing points into it
            if failed:
                return None
            resident += sum(b & 1 for b in vec.raw)
            pages += n
    return round(resident / pages, 3) if pages else None
