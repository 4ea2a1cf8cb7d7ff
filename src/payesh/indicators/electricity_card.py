"""The model card of a city's electricity estimate, as markdown (``models/electricity-<city>.md``).

:func:`payesh.indicators.electricity.electricity_estimate` returns its card as a dict (also
stored, as JSON, in the store's ``electricity_model`` attribute); this module turns it
into the page a planner reads: what the model is, what data it was calibrated on, how
well it predicts months it has not seen, and how that compares with the published
yardstick.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["YARDSTICK_R2", "model_card_markdown", "write_model_card"]

YARDSTICK_R2 = (0.85, 0.87)
"""R² of NPP-VIIRS total night light vs. regional economic output (GDP) of Chinese
provinces and prefectures (Li et al. 2013, Remote Sensing 5:3057–3081): the yardstick the
issue names for light-based models of activity, not a measured electricity R²."""

_FEATURES = {
    "ntl_total": (
        "nW cm-2 sr-1 (pixel-weighted sum)",
        "sum of lights over the city (Σ ntl_sum of all tiles; months with < half the "
        "tiles observed are left out)",
    ),
    "builtup_km2": ("km²", "built-up area of the city (Σ builtup_fraction × tile area)"),
    "cooling_degC": ("°C", "city-mean land surface temperature above 25 °C (cooling load)"),
    "heating_degC": ("°C", "city-mean land surface temperature below 15 °C (heating load)"),
}


def _num(x: Any, fmt: str = ".2f") -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "—"
    return "—" if not math.isfinite(v) else format(v, fmt)


def model_card_markdown(card: Mapping[str, Any], *, city: str, code_version: str = "") -> str:
    """The model card of a city's electricity estimate as markdown text.

    Parameters
    ----------
    card
        The card returned by :func:`payesh.indicators.electricity.electricity_estimate` (or
        parsed from the store's ``electricity_model`` attribute).
    city
        The city's id.
    code_version
        payesh version that produced the estimate (recorded in the card).

    Returns
    -------
    str
        Markdown: model, features with units, calibration data, cross-validated R² and
        MAPE overall and per feature set, the yardstick of Li et al. (2013) and why a
        city's monthly series differs from it. A card without calibration says why.
    """
    lines = [f"# Electricity model card — {city}", ""]
    if "cv_r2" not in card:
        reason = card.get("reason", "not calibrated")
        lines += [
            "No electricity estimate was made for this run: "
            f"{reason}. `electricity_mwh` is absent from the store (not guessed).",
            "",
        ]
        return "\n".join(lines)
    lo, hi = YARDSTICK_R2
    r2 = float(card["cv_r2"])
    lines += [
        f"`electricity_mwh` (MWh per tile and month) of **{city}**, "
        f"{card.get('period', '')}; payesh {code_version}".rstrip("; ")
        + ".",
        "",
        "## Model",
        "",
        f"- `{card.get('model', '')}` from scikit-learn: a linear model with non-negative "
        "coefficients and a free intercept (the base load), fitted on **monthly city "
        "totals**; each month's city estimate is then shared among tiles by their own "
        "modelled contribution (lights by `ntl_sum`, base load, built-up and heat by "
        "`builtup_fraction`).",
        f"- Deterministic (seed {card.get('seed', 0)} recorded for the record).",
        "",
        "| feature | unit | what it is | coefficient (MWh per unit) |",
        "|---|---|---|---|",
    ]
    coef = card.get("coefficients", {})
    for name in card.get("features", []):
        unit, what = _FEATURES.get(name, ("", ""))
        lines.append(f"| `{name}` | {unit} | {what} | {_num(coef.get(name), '.4g')} |")
    lines += [
        f"| intercept | MWh | base load | {_num(card.get('intercept_mwh'), '.4g')} |",
        "",
        "## Data",
        "",
        f"- Target: the city's reported electricity consumption (`consumption:` of the "
        f"manifest), MWh per month; {card.get('n_months', 0)} months overlap the night "
        "lights.",
        "- Features: the run's own tile indicators (VIIRS monthly night lights, "
        "Sentinel-2 built-up fraction, Landsat land surface temperature), summed or "
        "averaged over the city. Missing built-up / temperature months take the "
        "feature's median; months without lights are not used.",
    ]
    months = card.get("months") or []
    reported = card.get("reported_mwh") or []
    if months and len(months) == len(reported):
        lines += ["", "| month | reported MWh |", "|---|---|"]
        lines += [f"| {m} | {_num(v, '.1f')} |" for m, v in zip(months, reported, strict=True)]
    lines += [
        "",
        "## Skill",
        "",
        f"Cross-validation: {card.get('cv', '')}. Scores are of held-out months only.",
        "",
        "| features | CV R² | CV MAPE |",
        "|---|---|---|",
    ]
    for label, s in (card.get("cv_by_features") or {}).items():
        lines.append(f"| {label} | {_num(s.get('cv_r2'))} | {_num(100 * s['cv_mape'], '.1f')} % |")
    lines += [
        f"| **model used** ({', '.join(card.get('features', []))}) | **{_num(r2)}** | "
        f"**{_num(100 * float(card['cv_mape']), '.1f')} %** |",
        "",
        f"In-sample R² (not a measure of skill): {_num(card.get('fit_r2'))}.",
        "",
        "## Yardstick",
        "",
        f"Li et al. (2013, *Remote Sensing* 5:3057) explain regional output from VIIRS total "
        f"night light with R² ≈ {lo:.2f}–{hi:.2f}. This model's cross-validated R² is "
        f"{_num(r2)}"
        + (
            " — inside or above that range."
            if r2 >= lo
            else f", {_num(lo - r2)} below the lower end."
        ),
        "",
        "Why a city's model differs from the yardstick:",
        "",
        "- **Different variance to explain.** The yardstick regresses many regions of very "
        "different size on their lights: most of the variance is *between* regions, and "
        "total light tracks size. Here one city is followed month by month; what varies is "
        "the season (heating, cooling), which night lights barely see, so heat carries the "
        "skill and lights little.",
        "- **Few samples.** A year gives about ten usable months; held-out blocks of three "
        "consecutive months leave six to nine to fit on, so R² is noisy (one odd month "
        "moves it by ±0.1).",
        "- **Light that is not in the meter.** Reported consumption only contains "
        "registered consumers; light from an unregistered load (the thing `load_suspect` "
        "looks for) raises the lights but not the target, and a lights-only model "
        "degrades exactly when such a load appears.",
        "- **Held-out blocks, not random months.** Neighbouring months share weather and "
        "trend; leaving single months out would flatter the score.",
        "",
        "Use `electricity_mwh` for where and how the city's consumption moves between "
        "tiles and months, with an error of about the CV MAPE on the city total; not as "
        "a meter reading of one tile.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(
    card: Mapping[str, Any], *, city: str, models_dir: str | Path, code_version: str = ""
) -> Path:
    """Write :func:`model_card_markdown` to ``models_dir/electricity-<city>.md``; its path."""
    out = Path(models_dir) / f"electricity-{city}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(model_card_markdown(card, city=city, code_version=code_version))
    return out
