"""Render the figures the reliability tests recorded into ``docs/reliability.md``.

``python tests/integration/reliability/render.py [--variant long]`` replaces the part of
the page between ``<!-- figures:begin -->`` and ``<!-- figures:end -->`` with one table
per guarantee, built from the latest record of each test in
``data/reliability/figures-<variant>.jsonl`` (written by :func:`figures.record`).
``make reliability`` runs the long campaign and then this script.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from figures import OUT, REPO  # noqa: E402

PAGE = REPO / "docs" / "reliability.md"
BEGIN, END = "<!-- figures:begin -->", "<!-- figures:end -->"
ORDER = ("faults", "crash", "concurrency", "bad_input", "properties", "stateful", "fuzz")
SKIP = {"guarantee", "test", "variant", "when"}


def latest(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last record of each (guarantee, test), in order of first appearance."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        out[(row["guarantee"], row["test"])] = row
    return list(out.values())


def _cell(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def render(rows: list[dict[str, Any]], variant: str) -> str:
    rows = latest(rows)
    if not rows:
        raise SystemExit(f"no figures recorded for the {variant} variant under {OUT}")
    lines = [
        f"Figures of the **{variant}** campaign, recorded by the tests themselves "
        f"(latest: {max(r['when'] for r in rows)}).",
        "",
    ]
    lost = sum(int(r.get("data_lost", 0)) for r in rows)
    guarantees = sorted(
        {r["guarantee"] for r in rows},
        key=lambda g: (g not in ORDER, ORDER.index(g) if g in ORDER else 0, g),
    )
    for g in guarantees:
        lines += [f"**{g}**", "", "| test | figures |", "|---|---|"]
        for r in (r for r in rows if r["guarantee"] == g):
            figs = "; ".join(f"{k}: {_cell(v)}" for k, v in sorted(r.items()) if k not in SKIP)
            lines.append(f"| `{r['test']}` | {figs} |")
        lines.append("")
    lines.append(f"Data lost, summed over every record above: **{lost}**.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--variant", default="long", choices=("short", "long"))
    ap.add_argument("--page", type=Path, default=PAGE)
    args = ap.parse_args(argv)
    src = OUT / f"figures-{args.variant}.jsonl"
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line]
    page = args.page.read_text(encoding="utf-8")
    head, _, rest = page.partition(BEGIN)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{args.page} has no {BEGIN} marker")
    args.page.write_text(
        f"{head}{BEGIN}\n{render(rows, args.variant)}\n{END}{tail}", encoding="utf-8"
    )
    print(f"wrote {args.page} from {src} ({len(latest(rows))} tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
