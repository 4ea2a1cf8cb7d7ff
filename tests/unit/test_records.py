"""Permits files: GeoJSON / GeoPackage / GeoParquet, any CRS, repaired or refused."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pytest
import shapely

from payesh.errors import ManifestError
from payesh.records import PermitsRepairedWarning, read_permits

# two parcels near Khoy in UTM 38N, metres
SQUARE = shapely.box(500000, 4265000, 500100, 4265100)
BOWTIE = shapely.Polygon(
    [(500200, 4265000), (500300, 4265100), (500300, 4265000), (500200, 4265100)]
)


def _frame(crs: str | None = "EPSG:32638", **extra: list[object]) -> gpd.GeoDataFrame:
    data: dict[str, list[object]] = {
        "permit_id": ["P-1", "P-2"],
        "issued": ["2025-02-01", "2025-03-15"],
    }
    data.update(extra)
    return gpd.GeoDataFrame(
        data, geometry=[SQUARE, shapely.box(500400, 4265000, 500500, 4265100)], crs=crs
    )


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".parquet"])
def test_formats_and_crs(tmp_path: Path, suffix: str) -> None:
    gdf = _frame(expires=["2026-01-01", "2026-01-01"]).to_crs("EPSG:3857")
    path = tmp_path / f"permits{suffix}"
    if suffix == ".parquet":
        gdf.to_parquet(path)
    else:
        gdf.to_file(path)
    got = read_permits(path)
    assert list(got.columns) == ["permit_id", "issued", "geometry"]
    assert got.crs.to_epsg() == 3857
    assert got["issued"].dtype == "datetime64[ns]" and got["issued"][1] == pd.Timestamp(
        "2025-03-15"
    )
    area = got.to_crs("EPSG:32638").geometry.area
    assert abs(float(area[0]) - 10_000.0) < 1.0  # 100 m × 100 m back in UTM


def test_invalid_geometry_repaired_and_reported(tmp_path: Path) -> None:
    gdf = _frame()
    gdf.loc[1, "geometry"] = BOWTIE
    path = tmp_path / "permits.gpkg"
    gdf.to_file(path)
    with pytest.warns(
        PermitsRepairedWarning, match=r"permits\.gpkg.*feature 1 \(permit_id 'P-2'\)"
    ):
        got = read_permits(path)
    assert got.geometry.is_valid.all() and float(got.geometry.area[1]) == pytest.approx(5000.0)


def _geojson(tmp_path: Path, features: list[dict[str, object]], crs: bool = True) -> Path:
    doc: dict[str, object] = {"type": "FeatureCollection", "features": features}
    if crs:
        doc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32638"}}
    path = tmp_path / "permits.geojson"
    path.write_text(json.dumps(doc))
    return path


def _feat(pid: str, geom: dict[str, object] | None, **props: object) -> dict[str, object]:
    return {
        "type": "Feature",
        "properties": {"permit_id": pid, "issued": "2025-01-01", **props},
        "geometry": geom,
    }


def test_bad_permits_name_file_and_feature(tmp_path: Path) -> None:
    sq = shapely.geometry.mapping(SQUARE)
    point = {"type": "Point", "coordinates": [500000.0, 4265000.0]}
    cases = [
        (
            [_feat("A", sq), _feat("B", None)],
            r"permits\.geojson: feature 1 \(permit_id 'B'\) has no geometry",
        ),
        ([_feat("A", point)], r"feature 0 \(permit_id 'A'\) is not a polygon with area \(Point\)"),
        ([_feat("A", sq, issue_date="2025-01-01")], r"unknown permit column\(s\) \['issue_date'\]"),
        (
            [_feat("A", sq), _feat("B", sq, issued="soon")],
            r"feature 1 \(permit_id 'B'\): 'issued' is not a date: 'soon'",
        ),
    ]
    for features, message in cases:
        with pytest.raises(ManifestError, match=message):
            read_permits(_geojson(tmp_path, features))
    # GeoParquet has no default CRS: a file without one is refused, naming it
    nocrs = tmp_path / "nocrs.parquet"
    _frame(crs=None).to_parquet(nocrs)
    with pytest.raises(ManifestError, match=r"nocrs\.parquet: permits have no CRS"):
        read_permits(nocrs)
    with pytest.raises(ManifestError, match=r"missing\.gpkg: permits file not found"):
        read_permits(tmp_path / "missing.gpkg")
