"""Tiles decoded by payesh (libdeflate) give exactly what GDAL reads, or are left to GDAL."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from payesh.errors import SourceError
from payesh.sources.cogtiles import TileSource, tile_source

REAL = Path(__file__).resolve().parents[3] / "shared" / "realdata"
ZAGREB = REAL / "s2_l2a_zagreb_33TWL_mapchete-eo" / "sentinel-2-l2a" / "S2B_33TWL_20230820_0_L2A"
VIIRS = REAL / "viirs_monthly_mumbai_2012-2015" / "stac" / "viirs-ntl-monthly"
WORLDCOVER = (
    REAL / "esa_worldcover_N00E006_saotome" / "ESA_WorldCover_10m_2021_v200_N00E006_Map.tif"
)


def _rewrite(src_path: Path, out: Path, **options: Any) -> Path:
    """A real band written again with GDAL, as providers write COGs (``options``)."""
    with rasterio.open(src_path) as src:
        data = src.read(1)
        profile = src.profile | {"driver": "GTiff", "tiled": True} | options
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data, 1)
    return out


def _red_in_256px_tiles(tmp_path: Path) -> Path:
    """Zagreb's red band (uint16) deflated with the predictor in 256 px tiles."""
    return _rewrite(
        ZAGREB / "B04.tif",
        tmp_path / "b.tif",
        compress="deflate",
        predictor=2,
        blockxsize=256,
        blockysize=256,
    )


def _windows(height: int, width: int, tile: int, rng: np.random.Generator) -> list[Window]:
    """Every tile's window, windows across tile edges, the bottom and right edges, and
    random ones."""
    wins = [
        Window(c, r, min(tile, width - c), min(tile, height - r))
        for r in range(0, height, tile)
        for c in range(0, width, tile)
    ]
    if height > tile + 6 and width > tile + 6:
        wins.append(Window(tile - 3, tile - 5, 9, 11))  # four tiles
    wins += [
        Window(0, height - 1, width, 1),  # the bottom row, whole width
        Window(width - 1, 0, 1, height),  # the right column
        Window(0, 0, width, height),
    ]
    for _ in range(40):
        r, c = int(rng.integers(0, height)), int(rng.integers(0, width))
        h, w = int(rng.integers(1, height - r + 1)), int(rng.integers(1, width - c + 1))
        wins.append(Window(c, r, w, h))
    return wins


def _same_as_gdal(path: Path, tile: int, windows: list[Window] | None = None) -> TileSource:
    rng = np.random.default_rng(0)
    with rasterio.open(path) as src:
        tiles = tile_source(src, keep=2)
        assert tiles is not None, f"{path} should be decoded by payesh"
        for win in windows or _windows(src.height, src.width, tile, rng):
            got = tiles.read(int(win.col_off), int(win.row_off), int(win.width), int(win.height))
            assert got is not None, win
            want = src.read(1, window=win)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want, err_msg=f"{path.name} {win}")
            assert not got.flags.writeable  # a view of the cache: nobody writes into it
    return tiles


@pytest.mark.parametrize(
    ("band", "predictor"), [("B04.tif", 2), ("B08.tif", 1), ("SCL.tif", 2), ("SCL.tif", 1)]
)
def test_real_sentinel2_bands_deflated_as_providers_do(
    tmp_path: Path, band: str, predictor: int
) -> None:
    """Real L2A reflectance (uint16) and scene classes (uint8), DEFLATE with and without
    the horizontal predictor, 256 px tiles (915 px: partial tiles at the bottom and right)."""
    path = _rewrite(
        ZAGREB / band,
        tmp_path / band,
        compress="deflate",
        predictor=predictor,
        blockxsize=256,
        blockysize=256,
    )
    tiles = _same_as_gdal(path, 256)
    assert tiles.predictor == predictor
    assert tiles.decoded >= 16  # every tile of the 4 × 4 was decoded by payesh


def test_real_night_light_coverage_and_landcover_files() -> None:
    """Real files as their providers wrote them: VIIRS coverage counts (uint16, DEFLATE, one
    512 px tile over 48 × 101 px) and ESA WorldCover (uint8, DEFLATE, 1024 px tiles; a corner of its 36 000² px)."""
    cf = sorted(VIIRS.glob("*/cf_cvg.tif"))
    assert cf
    for path in cf[:3]:
        _same_as_gdal(path, 512)
    corner = [
        Window(0, 0, 1024, 1024),
        Window(1000, 900, 100, 300),
        Window(35_000, 35_500, 1000, 500),
    ]
    _same_as_gdal(WORLDCOVER, 1024, corner)


def test_a_tile_is_decoded_once_while_kept(tmp_path: Path) -> None:
    path = _red_in_256px_tiles(tmp_path)
    with rasterio.open(path) as src:
        tiles = tile_source(src, keep=1)
        assert tiles is not None
        for quarter in ((0, 0), (0, 128), (128, 0), (128, 128)):  # one tile, four windows
            assert tiles.read(quarter[1], quarter[0], 128, 128) is not None
        assert tiles.decoded == 1
        tiles.read(256, 0, 10, 10)  # the next tile pushes the first out (keep=1)
        tiles.read(0, 0, 10, 10)
        assert tiles.decoded == 3


@pytest.mark.parametrize(
    "options",
    [
        {"compress": "lzw", "predictor": 2},
        {"compress": "zstd"},
        {"compress": "deflate", "dtype": "float32"},
        {"compress": "deflate", "ENDIANNESS": "BIG"},
        {"compress": "none"},
    ],
    ids=["lzw", "zstd", "float32", "big-endian", "uncompressed"],
)
def test_what_payesh_does_not_decode_is_left_to_gdal(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    dtype = options.pop("dtype", None)
    src_path = ZAGREB / "B04.tif"
    if dtype:
        with rasterio.open(src_path) as src:
            data = src.read(1).astype(dtype)
            profile = src.profile | {"dtype": dtype, "driver": "GTiff"}
        src_path = tmp_path / "float.tif"
        with rasterio.open(src_path, "w", **profile) as dst:
            dst.write(data, 1)
    path = _rewrite(src_path, tmp_path / "x.tif", blockxsize=256, blockysize=256, **options)
    with rasterio.open(path) as src:
        assert tile_source(src) is None


def test_sparse_tiles_are_read_by_gdal(tmp_path: Path) -> None:
    """A tile the file does not hold (sparse) gives ``None``: the aligned reader then asks
    GDAL, which fills it; the tiles around it are still decoded."""
    with rasterio.open(ZAGREB / "B04.tif") as src:
        data = src.read(1)
        profile = src.profile | {
            "driver": "GTiff",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "predictor": 2,
            "sparse_ok": True,
        }
    path = tmp_path / "sparse.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[:256, :256], 1, window=Window(0, 0, 256, 256))  # tile (0, 0) only
    with rasterio.open(path) as src:
        tiles = tile_source(src)
        assert tiles is not None
        np.testing.assert_array_equal(tiles.read(0, 0, 256, 256), data[:256, :256])
        assert tiles.read(256, 0, 10, 10) is None  # never written
        assert tiles.read(250, 0, 10, 10) is None  # crosses into it


def test_a_flipped_bit_in_a_tile_is_an_error_never_wrong_pixels(tmp_path: Path) -> None:
    """Single-bit flips in a tile's bytes: payesh's read either raises one SourceError
    naming the file and the tile (the stream or its Adler-32 fails) or, never, returns
    pixels other than the file's. (GDAL stops inflating when the tile is full, before
    the checksum, and mostly returns altered pixels without an error: it is not asked.)"""
    path = _red_in_256px_tiles(tmp_path)
    with rasterio.open(path) as src:
        want = src.read(1, window=Window(256, 256, 256, 256))
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        size = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    good = path.read_bytes()
    rng = np.random.default_rng(7)
    raised = 0
    for n, bit in enumerate(rng.integers(0, size * 8, 25)):
        raw = bytearray(good)
        raw[offset + int(bit) // 8] ^= 1 << (int(bit) % 8)
        broken = tmp_path / f"broken-{n}.tif"
        broken.write_bytes(bytes(raw))
        with rasterio.open(broken) as src:
            tiles = tile_source(src)
            assert tiles is not None
            try:
                got = tiles.read(256, 256, 256, 256)
            except SourceError as err:
                assert str(broken) in str(err) and "row 1, column 1" in str(err)
                raised += 1
                continue
        assert got is not None
        np.testing.assert_array_equal(got, want)  # a flip that changed nothing decoded
    assert raised >= 20


def test_a_stream_longer_than_a_tile_is_left_to_gdal(tmp_path: Path) -> None:
    """Some writers' last strip inflates to more than a strip: libtiff accepts it, so
    payesh hands it to GDAL; bytes that do not inflate at all are an error."""
    path = _rewrite(ZAGREB / "SCL.tif", tmp_path / "s.tif", compress="deflate")
    with rasterio.open(path) as src:
        tiles = tile_source(src)
        assert tiles is not None
        nbytes = tiles.tile_h * tiles.tile_w
        assert not tiles._damaged(zlib.compress(bytes(nbytes + 100)), nbytes)  # GDAL's
        assert tiles._damaged(b"not a zlib stream", nbytes)
        with pytest.raises(SourceError, match="tile \\(row 0, column 0\\) is damaged"):
            tiles._raise_damaged(0, 0, b"not a zlib stream")
