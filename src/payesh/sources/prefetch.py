"""Remote tiles fetched ahead of the city blocks that read them.

A month's city blocks are read one after another (:mod:`payesh.sources.aligned`); the
tiles of remote files each block needs are asked for before it, up to
:data:`PREFETCH_BYTES` ahead, on the ``tile-fetch`` pool
(:meth:`~payesh.sources.cogtiles.TileSource.prefetch`), so that a block's reads find
their bytes fetched instead of waiting a round trip per tile.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from payesh.sources.citygrid import ItemPlan, source_window
from payesh.sources.cogtiles import TileSource

__all__ = ["PREFETCH_BYTES", "Prefetch"]


#: Bytes of remote tiles fetched ahead of the city block being read (and not decoded
#: yet), at most; the next block's are always asked for. Memory for speed: the 24 km
#: bench year at 100 ms a request took 33.2 s with 48 MiB (1 054 MB peak) and 27.2 s
#: with 96 (1 169 MB; 24.2 s and 1 135 MB once the tiles were views of their request's
#: bytes). 96 MiB is twelve blocks of its month (42 files, ~190 kB a 512 px tile), four
#: of Earth Search's 1024 px tiles a file.
PREFETCH_BYTES = 96 * 2**20


class Prefetch:
    """Fetches of the remote tiles the month's city blocks need, started in block order
    ahead of the reads (:meth:`~payesh.sources.cogtiles.TileSource.prefetch`), up to
    :data:`PREFETCH_BYTES` fetched and not yet decoded."""

    def __init__(
        self,
        plans: Sequence[ItemPlan],
        blocks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        pool: Any,
    ) -> None:
        self.plans, self.blocks, self.pool = plans, blocks, pool
        self.sources = [
            g.tiles for p in plans for g in p.grids.values() if g.tiles and g.tiles.file.remote
        ]
        self.next = 0  # the first block whose tiles are not asked for yet

    def _tiles(self, k: int) -> Iterator[tuple[TileSource, tuple[int, int]]]:
        own_r, own_c, halo_r, halo_c = self.blocks[k]
        for p in self.plans:
            for band, grid in p.grids.items():
                if grid.tiles is None or not grid.tiles.file.remote:
                    continue
                rows, cols = (halo_r, halo_c) if band == "scl" else (own_r, own_c)
                found = source_window(grid, rows, cols)
                if found is not None:
                    r0, c0, r1, c1 = found[0]
                    for tile in grid.tiles.tiles_in(c0, r0, c1 - c0, r1 - r0):
                        yield grid.tiles, tile

    def reach(self, k: int) -> None:
        """Ask for the tiles of block ``k`` and the one after (if not asked yet); when
        less than half :data:`PREFETCH_BYTES` are on their way, for the blocks after
        those until :data:`PREFETCH_BYTES` are (several blocks at once: a file's tiles
        that follow each other are then fetched by one request)."""
        if not self.sources:
            return
        asked = 0
        wanted: dict[TileSource, list[tuple[int, int]]] = {}
        on_the_way = sum(s.pending_bytes for s in self.sources)
        refill = on_the_way < PREFETCH_BYTES / 2
        while self.next < len(self.blocks) and (
            self.next <= k + 1 or (refill and on_the_way + asked < PREFETCH_BYTES)
        ):
            for source, tile in self._tiles(self.next):
                if tile not in wanted.setdefault(source, []):
                    wanted[source].append(tile)
                    asked += source.tile_bytes(*tile)
            self.next += 1
        for source, tiles in wanted.items():
            source.prefetch(tiles, self.pool)
