"""Tiles of local DEFLATE GeoTIFFs decoded with libdeflate, for the aligned reader.

GDAL (through libtiff) decodes a DEFLATE tile with libdeflate when it asks for the whole
tile, but with zlib, at about twice the CPU, for the bottom row of tiles, where it asks
only for the rows inside the raster; it undoes the horizontal predictor in libtiff's
generic loop and passes each block through its block cache on the way to the caller's
array. On a month of the 24 km bench city (6 scenes, 42 files of 512 px tiles) reading
every tile took 0.95 CPU-s through GDAL and 0.51 CPU-s this way, with identical values.

For a single-band, little-endian TIFF compressed with DEFLATE (tiles or strips,
predictor 1 or 2, 8- or 16-bit integers; what Sentinel-2 L2A and Landsat Collection 2
COGs are), :class:`TileSource` reads each tile's bytes where the TIFF's tile table says (as GDAL
gives it: ``BLOCK_OFFSET_x_y`` in its ``TIFF`` metadata domain), decodes them with
libdeflate (the ``deflate`` package; it releases the GIL) and undoes the predictor in a
compiled loop. Anything else (another codec, a sparse or short tile, a stream that
inflates to more than a tile) is read by GDAL.

A local file's tiles are read with ``pread``. A file over http(s) (:func:`tile_source`
with ``url=``) has each tile fetched by one range request of payesh's
(:func:`~payesh.sources.http.get_range`: the process's retry policy), and
:meth:`TileSource.prefetch` starts fetches on a pool ahead of the reads, so that the
tiles of the next city blocks are on their way while a block is decoded: GDAL reads a
file's blocks one request after another, each a round trip.

A tile whose bytes do not inflate — a damaged stream, or one whose Adler-32 does not
match what it inflates to — raises :class:`~payesh.errors.SourceError` naming the file
and the tile; a remote tile is first fetched again, up to the policy's attempts (a bit
flipped on the way). GDAL is not asked again: it stops inflating when a tile's output
is full, before the stream's checksum, so a flipped bit in a tile's data mostly decodes
there into wrong pixels without an error (docs/reliability-faults.md).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import Executor, Future
from typing import Any

import deflate
import numpy as np
from numba import njit

from payesh.errors import SourceError
from payesh.sources.tilefiles import HttpFile, LocalFile

__all__ = ["HttpFile", "LocalFile", "TileSource", "tile_source"]

log = logging.getLogger(__name__)

_DTYPES = frozenset({"uint8", "int8", "uint16", "int16"})

#: Longest request :meth:`TileSource.prefetch` makes of tiles that follow each other in
#: a remote file, and the most bytes between two tiles it fetches with them (a COG's
#: tiles are 8 bytes apart: GDAL writes each tile's size before it and its last 4
#: bytes again after it), bytes.
MERGE_BYTES = 4 * 2**20
MERGE_GAP = 16 * 2**10

#: GDAL options that change how a file is fetched (headers, authentication, TLS, a
#: proxy of GDAL's own, S3's requester-pays): a file read under any of them, given to
#: the reader or set in the environment (GDAL reads both), is left to GDAL.
_GDAL_FETCH_OPTIONS = frozenset(
    {
        "GDAL_HTTP_HEADERS",
        "GDAL_HTTP_HEADER_FILE",
        "GDAL_HTTP_AUTH",
        "GDAL_HTTP_USERPWD",
        "GDAL_HTTP_BEARER",
        "GDAL_HTTP_COOKIE",
        "GDAL_HTTP_COOKIEFILE",
        "GDAL_HTTP_NETRC_FILE",
        "GDAL_HTTP_PROXY",
        "GDAL_HTTPS_PROXY",
        "GDAL_HTTP_PROXYUSERPWD",
        "GDAL_HTTP_UNSAFESSL",
        "GDAL_HTTP_SSLCERT",
        "GDAL_HTTP_SSLKEY",
        "AWS_REQUEST_PAYER",
    }
)


@njit(nogil=True, cache=True)
def _undo_horizontal(a: np.ndarray) -> None:  # pragma: no cover - compiled
    """TIFF predictor 2 undone in place: each row's running sum, modulo 2**bits."""
    n, m = a.shape
    for i in range(n):
        row = a[i]
        acc = row[0]
        for j in range(1, m):
            acc += row[j]
            row[j] = acc  # stored modulo 2**bits, as the predictor's differences were


class TileSource:
    """Windows of one DEFLATE TIFF, decoded tile by tile.

    Keeps the last ``keep`` tiles decoded: the aligned reader asks for the windows of a
    tile one after another (the 2 × 2 city blocks of a 20 m tile, the halo of the cloud
    mask into the next tiles), so each tile is decoded about once.

    Not for concurrent use of one source from several threads at once beyond what its
    lock serializes (the aligned reader reads a file from one task at a time).
    """

    def __init__(
        self, src: Any, *, predictor: int, keep: int = 1, file: LocalFile | HttpFile | None = None
    ) -> None:
        self.file = file or LocalFile(src.name)
        self.path: str = self.file.label
        self.height, self.width = int(src.height), int(src.width)
        self.tile_h, self.tile_w = (int(v) for v in src.block_shapes[0])
        self.dtype = np.dtype(src.dtypes[0])
        self.predictor = predictor
        self.keep = max(1, int(keep))
        self._dataset = src  # for its tile table only: GDAL reads nothing here
        self._tiles: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._table: dict[tuple[int, int], tuple[int, int] | None] = {}
        self._lock = threading.Lock()
        #: fetches started ahead: tile -> (the request's future, the tile's place in it)
        self._pending: dict[tuple[int, int], tuple[Future[bytes], int, int]] = {}
        self._pending_lock = threading.Lock()
        self.decoded = 0  # tiles decoded so far (each cache miss)
        if self.file.remote:  # the whole table now: prefetch asks from another thread
            self._dataset = None
            for r in range((self.height + self.tile_h - 1) // self.tile_h):
                for c in range((self.width + self.tile_w - 1) // self.tile_w):
                    self._table[(r, c)] = _table_entry(src, r, c)

    def _where(self, r: int, c: int) -> tuple[int, int] | None:
        """``(offset, size)`` of tile (r, c) in the file; ``None`` for a sparse tile."""
        if (r, c) not in self._table:  # a local file's, read as needed
            self._table[(r, c)] = _table_entry(self._dataset, r, c)
        return self._table[(r, c)]

    def tiles_in(
        self, col_off: int, row_off: int, width: int, height: int
    ) -> list[tuple[int, int]]:
        """``(row, column)`` of the tiles a window meets."""
        th, tw = self.tile_h, self.tile_w
        return [
            (r, c)
            for r in range(row_off // th, (row_off + height - 1) // th + 1)
            for c in range(col_off // tw, (col_off + width - 1) // tw + 1)
        ]

    def tile_bytes(self, r: int, c: int) -> int:
        """Bytes of tile (r, c) in a remote file (0: sparse; a local file: not known)."""
        where = self._table.get((r, c))
        return where[1] if where is not None else 0

    def prefetch(self, tiles: Iterable[tuple[int, int]], pool: Executor) -> int:
        """Start fetching the bytes of ``tiles`` (``(row, column)``s) on ``pool``, a remote
        file's; a tile kept decoded or on its way already is not fetched again. Tiles
        that lie one after another in the file (at most :data:`MERGE_GAP` apart) are
        fetched by one request of up to :data:`MERGE_BYTES`, as GDAL merges them.
        Returns the bytes asked for."""
        if not self.file.remote:
            return 0
        todo: list[tuple[int, int, tuple[int, int]]] = []
        with self._pending_lock:
            for tile in dict.fromkeys(tiles):
                where = self._table.get(tile)
                # _tiles read without the lock, which a read holds while it waits for the
                # network: a tile dropped just after costs a fetch in the read, no more
                if where is not None and tile not in self._pending and tile not in self._tiles:
                    todo.append((*where, tile))
            todo.sort()
            runs: list[list[tuple[int, int, tuple[int, int]]]] = []
            for part in todo:
                last = runs[-1][-1] if runs else None
                if (
                    last is not None
                    and 0 <= part[0] - (last[0] + last[1]) <= MERGE_GAP
                    and part[0] + part[1] - runs[-1][0][0] <= MERGE_BYTES
                ):
                    runs[-1].append(part)
                else:
                    runs.append([part])
            for run in runs:
                start = run[0][0]
                fetch = pool.submit(self.file.read, start, run[-1][0] + run[-1][1] - start)
                for offset, size, tile in run:
                    self._pending[tile] = (fetch, offset - start, size)
        return sum(size for _, size, _ in todo)

    @property
    def pending_bytes(self) -> int:
        """Bytes fetched or being fetched ahead and not decoded yet."""
        with self._pending_lock:
            return sum(size for _, _, size in self._pending.values())

    def _raw(self, r: int, c: int, offset: int, size: int) -> bytes | memoryview:
        with self._pending_lock:
            ahead = self._pending.pop((r, c), None)
        if ahead is None:
            return self.file.read(offset, size)
        fetch, at, n = ahead
        return memoryview(fetch.result())[at : at + n]  # no copy: the request's bytes

    def _decode(self, r: int, c: int) -> np.ndarray | None:
        where = self._where(r, c)
        if where is None:
            return None
        if self.file.remote and not self.file.little_endian():
            return None  # GDAL swaps the bytes
        offset, size = where
        nbytes = self.tile_h * self.tile_w * self.dtype.itemsize
        for attempt in range(1, self.file.attempts + 1):
            raw = self._raw(r, c, offset, size)
            if len(raw) != size:
                return None  # truncated file: GDAL's read reports it
            try:
                buf = deflate.zlib_decompress(raw, nbytes)
                break
            except deflate.DeflateError:
                if not self._damaged(raw, nbytes):
                    return None  # a stream longer than a tile: GDAL reads it as libtiff allows
                if attempt == self.file.attempts:
                    self._raise_damaged(r, c, raw)
                log.info(
                    "%s: tile (row %d, column %d) arrived damaged (attempt %d/%d); fetching it again",
                    self.path,
                    r,
                    c,
                    attempt,
                    self.file.attempts,
                )
        if len(buf) != nbytes:
            return None  # a short tile (some writers' bottom row): GDAL pads it
        tile = np.frombuffer(buf, dtype=self.dtype).reshape(self.tile_h, self.tile_w)
        if self.predictor == 2:
            _undo_horizontal(tile.view(f"u{self.dtype.itemsize}"))
        tile.flags.writeable = False
        self.decoded += 1
        return tile

    @staticmethod
    def _damaged(raw: bytes | memoryview, nbytes: int) -> bool:
        """Whether a stream that did not inflate into a tile is damaged, rather than one
        that inflates to more than a tile (some writers' last strips: libtiff accepts
        them, so GDAL reads it)."""
        try:
            deflate.zlib_decompress(raw, 2 * nbytes + 1024)
        except deflate.DeflateError:
            return True
        return False

    def _raise_damaged(self, r: int, c: int, raw: bytes | memoryview) -> None:
        fetched = f", fetched {self.file.attempts} times" if self.file.remote else ""
        raise SourceError(
            f"{self.path}: tile (row {r}, column {c}) is damaged: its {len(raw)} bytes "
            f"do not inflate, or not to what its checksum says (a corrupt or altered "
            f"file{fetched}); fetch the file again from its provider, or leave its item out"
        )

    def _tile(self, r: int, c: int) -> np.ndarray | None:
        with self._lock:
            if (r, c) in self._tiles:
                self._tiles.move_to_end((r, c))
                return self._tiles[(r, c)]
            tile = self._decode(r, c)
            self._tiles[(r, c)] = tile
            while len(self._tiles) > self.keep:
                self._tiles.popitem(last=False)
            return tile

    def read(self, col_off: int, row_off: int, width: int, height: int) -> np.ndarray | None:
        """The window as ``dataset.read(1, window=Window(col_off, row_off, width,
        height))`` gives it (inside the raster), read-only; ``None`` when a tile it meets
        is not one this source decodes (read it with GDAL)."""
        th, tw = self.tile_h, self.tile_w
        r0, r1 = row_off // th, (row_off + height - 1) // th
        c0, c1 = col_off // tw, (col_off + width - 1) // tw
        if r0 == r1 and c0 == c1:  # inside one tile: a view of it
            tile = self._tile(r0, c0)
            if tile is None:
                return None
            y, x = row_off - r0 * th, col_off - c0 * tw
            return tile[y : y + height, x : x + width]
        out = np.empty((height, width), dtype=self.dtype)
        for r in range(r0, r1 + 1):
            for c in range(c0, c1 + 1):
                tile = self._tile(r, c)
                if tile is None:
                    return None
                y0, y1 = max(row_off, r * th), min(row_off + height, (r + 1) * th)
                x0, x1 = max(col_off, c * tw), min(col_off + width, (c + 1) * tw)
                out[y0 - row_off : y1 - row_off, x0 - col_off : x1 - col_off] = tile[
                    y0 - r * th : y1 - r * th, x0 - c * tw : x1 - c * tw
                ]
        out.flags.writeable = False
        return out

    def clear(self) -> None:
        """Let the decoded tiles, and the bytes fetched ahead, go."""
        with self._lock:
            self._tiles.clear()
        with self._pending_lock:
            ahead, self._pending = list(self._pending.values()), {}
        for fetch, _, _ in ahead:
            fetch.cancel()


def _table_entry(src: Any, r: int, c: int) -> tuple[int, int] | None:
    """``(offset, size)`` of tile (r, c) from GDAL's tile table; ``None`` when sparse."""
    get = src.get_tag_item
    try:
        offset = int(get(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
        size = int(get(f"BLOCK_SIZE_{c}_{r}", "TIFF", bidx=1))
    except (TypeError, ValueError):  # no entry: sparse, or not a table GDAL gives
        return None
    return (offset, size) if offset > 0 and size > 0 else None


def tile_source(
    src: Any,
    *,
    keep: int = 1,
    url: str | None = None,
    where: str | None = None,
    env: Mapping[str, str] | None = None,
    pool: Executor | None = None,
) -> TileSource | None:
    """A :class:`TileSource` for the open rasterio dataset ``src``, or ``None`` when GDAL
    must read it (see the module's text for what qualifies).

    ``url``: the http(s) address ``src`` was opened from; its tiles are then fetched by
    range requests on ``pool`` (the byte order, and :meth:`TileSource.prefetch`), named
    ``where`` in errors. A file GDAL reads with options that change the requests
    (headers, authentication, a proxy, requester-pays: in ``env``) is left to GDAL.
    """
    remote = url is not None and url.startswith(("http://", "https://"))
    try:
        if src.driver not in ("GTiff", "COG") or src.count != 1:
            return None
        if str(src.dtypes[0]) not in _DTYPES:
            return None
        if remote and (pool is None or _GDAL_FETCH_OPTIONS & {*(env or {}), *os.environ}):
            return None
        if not remote and not os.path.isfile(src.name):
            return None
        structure = src.tags(1, ns="IMAGE_STRUCTURE") | src.tags(ns="IMAGE_STRUCTURE")
        if structure.get("COMPRESSION") != "DEFLATE" or "NBITS" in structure:
            return None
        predictor = int(structure.get("PREDICTOR", "1"))
        if predictor not in (1, 2):
            return None
        if remote:
            assert url is not None and pool is not None
            file: LocalFile | HttpFile = HttpFile(url, where or url.split("?", 1)[0], pool)
        else:
            file = LocalFile(src.name)
            if not file.little_endian():  # big-endian TIFF: GDAL swaps its bytes
                return None
    except (OSError, ValueError, AttributeError):
        return None
    return TileSource(src, predictor=predictor, keep=keep, file=file)
