"""City manifests (SPEC §3): parsed once at the boundary into frozen, validated objects.

A manifest lives in ``datasets/cities/<name>.yaml``. Relative paths inside it
(``permits``, ``consumption``) are resolved against the *datasets root*: the parent of
the manifest's folder when that folder is called ``cities`` (as in the repository and in
generated demo cities), otherwise the manifest's own folder.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pyproj import CRS
from pyproj.exceptions import CRSError

from payesh.errors import ManifestError

__all__ = ["City", "cities_dir", "list_cities", "load_city"]

_NAME = re.compile(r"^[a-z0-9_-]+$")
MAX_RESOLUTION_M = 1000.0
"""The coarsest city grid accepted, metres (Sentinel-2 is read at 10 m)."""
MAX_TILE_SIZE_M = 100_000.0
"""The largest tile accepted, metres (a city spans at most 2 degrees)."""
CRS_MARGIN_DEG = 3.0
"""How far (degrees of longitude/latitude) a city may reach beyond its CRS's area of use:
half a UTM zone, so a city on a zone border may use the neighbouring zone."""


def cities_dir() -> Path:
    """Folder of the bundled manifests: ``$PAYESH_DATASETS/cities`` or the repo's ``datasets/cities``."""
    env = os.environ.get("PAYESH_DATASETS")
    if env:
        return Path(env) / "cities"
    return Path(__file__).resolve().parents[2] / "datasets" / "cities"


class City(BaseModel):
    """A city to monitor, as declared by its manifest.

    Attributes
    ----------
    name : str
        The city's id everywhere (``[a-z0-9_-]+``).
    title : str
        Human-readable name.
    bbox : tuple of float
        (west, south, east, north) in degrees, WGS84.
    crs : str
        Projected CRS the city is processed in (a UTM zone), e.g. ``"EPSG:32638"``.
    resolution : float
        Pixel size of the Sentinel-2 grid, metres.
    tile_size : float
        Side of a tile, metres; a whole multiple of ``resolution``.
    permits, consumption : Path or None
        Absolute paths of the building permits and the reported consumption, if given.
    source : Path or None
        The manifest file this city was read from.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    title: str
    bbox: tuple[float, float, float, float]
    crs: str
    resolution: float = Field(10.0, gt=0, le=MAX_RESOLUTION_M, allow_inf_nan=False)
    tile_size: float = Field(1000.0, gt=0, le=MAX_TILE_SIZE_M, allow_inf_nan=False)
    permits: Path | None = None
    consumption: Path | None = None
    source: Path | None = Field(None, exclude=True)

    @field_validator("bbox", "resolution", "tile_size", mode="before")
    @classmethod
    def _no_bool(cls, v: Any) -> Any:
        # YAML's true/false would otherwise pass as 1.0/0.0
        if isinstance(v, bool) or (
            isinstance(v, list | tuple) and any(isinstance(x, bool) for x in v)
        ):
            raise ValueError(f"{v!r} must be a number (metres or degrees), not true/false")
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} must match [a-z0-9_-]+")
        return v

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, v: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        w, s, e, n = v
        if not (-180 <= w < e <= 180):
            raise ValueError(f"{list(v)} needs -180 <= west < east <= 180 (lon/lat degrees)")
        if not (-90 <= s < n <= 90):
            raise ValueError(f"{list(v)} needs -90 <= south < north <= 90 (lon/lat degrees)")
        if (e - w) > 2 or (n - s) > 2:
            raise ValueError(f"{list(v)} spans more than 2 degrees; a city is smaller than that")
        return v

    @field_validator("crs")
    @classmethod
    def _check_crs(cls, v: str, info: ValidationInfo) -> str:
        try:
            crs = CRS.from_user_input(v)
        except CRSError as err:
            raise ValueError(f"{v!r} is not a CRS pyproj knows") from err
        if not crs.is_projected:
            raise ValueError(f"{v!r} is not projected; use the city's UTM zone, e.g. EPSG:32638")
        area, bbox = crs.area_of_use, info.data.get("bbox")
        if area is not None and bbox is not None:
            w, s, e, n = bbox
            m = CRS_MARGIN_DEG
            if w < area.west - m or e > area.east + m or s < area.south - m or n > area.north + m:
                raise ValueError(
                    f"{v!r} is meant for lon {area.west:g}..{area.east:g}, lat "
                    f"{area.south:g}..{area.north:g}, not for the city's bbox {list(bbox)}; "
                    f"use the UTM zone the city lies in"
                )
        return v

    @field_validator("tile_size")
    @classmethod
    def _check_tile_size(cls, v: float, info: ValidationInfo) -> float:
        res = info.data.get("resolution")
        if res:
            ratio = v / res
            if not math.isfinite(ratio) or abs(ratio - round(ratio)) > 1e-9 or round(ratio) < 1:
                raise ValueError(f"{v} m is not a whole multiple of resolution {res} m")
        return v

    @property
    def tile_pixels(self) -> int:
        """Side of a tile in pixels of the city grid."""
        return round(self.tile_size / self.resolution)


def _datasets_root(manifest: Path) -> Path:
    folder = manifest.parent
    return folder.parent if folder.name == "cities" else folder


def _format_validation(path: Path, err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(manifest)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = (
            "unknown key (allowed: " + ", ".join(sorted(set(City.model_fields) - {"source"})) + ")"
        )
    elif first["type"] == "missing":
        msg = "required key is missing"
    elif first["type"] != "value_error":  # pydantic's own words do not show the value
        msg += f" (got {first.get('input')!r})"
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{path}: key '{key}': {msg}{more}"


class _StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice (PyYAML keeps the last one)."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _mapping_without_duplicates,
)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ManifestError(f"{path}: manifest not found") from err
    except UnicodeDecodeError as err:
        raise ManifestError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ManifestError(f"{path}: not valid YAML{where}: {problem}") from err
    if data is None:
        raise ManifestError(
            f"{path}: the manifest is empty; it needs at least name, title, bbox, crs"
        )
    if not isinstance(data, dict):
        raise ManifestError(
            f"{path}: a manifest is a YAML mapping of keys, got {type(data).__name__}"
        )
    return data


def load_city(name_or_path: str | os.PathLike[str]) -> City:
    """Read and validate a city manifest.

    Parameters
    ----------
    name_or_path
        A manifest's ``name`` (looked up in :func:`cities_dir`) or the path of a manifest file.

    Raises
    ------
    ManifestError
        Naming the file and the key at fault.
    """
    text = os.fspath(name_or_path)
    path = Path(text)
    if not (text.endswith((".yaml", ".yml")) or os.sep in text or path.exists()):
        path = cities_dir() / f"{text}.yaml"
        if not path.exists():
            known = ", ".join(c.stem for c in sorted(cities_dir().glob("*.yaml"))) or "none"
            raise ManifestError(f"unknown city {text!r} (known: {known}); or give a manifest path")
    path = path.resolve()
    data = _read_yaml(path)
    root = _datasets_root(path)
    for key in ("permits", "consumption"):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ManifestError(f"{path}: key '{key}': expected a path, got {value!r}")
        try:
            resolved = (root / value).resolve()
            found = resolved.is_file()
        except (OSError, ValueError) as err:  # a NUL byte, a name too long for the OS
            raise ManifestError(
                f"{path}: key '{key}': {value!r} is not a usable path: {err}"
            ) from err
        if not found:
            raise ManifestError(f"{path}: key '{key}': file {resolved} does not exist")
        data[key] = resolved
    try:
        city = City.model_validate({**data, "source": path})
    except ValidationError as err:
        raise ManifestError(_format_validation(path, err)) from err
    if city.name != path.stem and path.parent.name == "cities":
        raise ManifestError(
            f"{path}: key 'name': {city.name!r} differs from the file name {path.stem!r}"
        )
    return city


def list_cities(folder: Path | None = None) -> list[City]:
    """All manifests in ``folder`` (default :func:`cities_dir`), sorted by name."""
    folder = folder or cities_dir()
    return [load_city(p) for p in sorted(folder.glob("*.yaml"))]
