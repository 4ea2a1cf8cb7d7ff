"""What the indicator modules share: the attributes (``units``, ``long_name``,
``description``) that each of their output variables carries."""

from __future__ import annotations


def var_attrs(units: str, long_name: str, description: str) -> dict[str, str]:
    return {"units": units, "long_name": long_name, "description": description}
