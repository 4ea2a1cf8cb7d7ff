"""Signing asset URLs at read time, for providers whose assets need it.

Planetary Computer's STAC API returns unsigned Azure Blob URLs; reading them takes a
Shared Access Signature (SAS) token appended as a query string, and a token expires after
about 45 minutes. So items are kept unsigned from search to read, and the loader calls
:func:`sign_items` on *copies* of a batch of items right before it reads them: a long
run signs each month as it reads it, with a fresh (or still valid, cached) token.

Which items need signing is decided by their asset hrefs (see
:class:`~payesh.sources.profiles.Provider`), so a mirror STAC API that points at
Planetary Computer's storage is signed too. The token service is the
``planetary-computer`` package's: ``PC_SDK_SAS_URL`` and ``PC_SDK_SUBSCRIPTION_KEY`` from
the environment (or ``~/.planetarycomputer/settings.env``) configure it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType, ModuleType

import pystac

from payesh.errors import SourceError
from payesh.sources.profiles import Provider, provider_for_href

__all__ = ["SIGNERS", "item_provider", "planetary_computer_module", "sign_items"]


def planetary_computer_module() -> ModuleType:
    """``planetary_computer``, imported without its pydantic-v1-style config warning.

    Its ``SASBase.Config`` class raises ``PydanticDeprecatedSince20`` on import, which a
    run with warnings as errors would otherwise trip over; nothing else is silenced.
    """
    from pydantic.warnings import PydanticDeprecatedSince20

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PydanticDeprecatedSince20)
        import planetary_computer
        import planetary_computer.sas
        import planetary_computer.settings
    return planetary_computer


def _sign_planetary_computer(item: pystac.Item) -> pystac.Item:
    import requests
    from pydantic import ValidationError

    planetary_computer = planetary_computer_module()
    try:
        return planetary_computer.sign(item)  # a signed clone; ``item`` is untouched
    except (requests.RequestException, ValidationError, ValueError, KeyError) as err:
        sas = planetary_computer.settings.Settings.get().sas_url
        raise SourceError(
            f"item {item.id!r}: cannot get a Planetary Computer SAS token from {sas} to read "
            f"its assets: {err} (set PC_SDK_SAS_URL / PC_SDK_SUBSCRIPTION_KEY if needed)"
        ) from err


#: Signer name (a :attr:`Provider.sign` value) -> function returning a signed copy.
SIGNERS: Mapping[str, Callable[[pystac.Item], pystac.Item]] = MappingProxyType(
    {"planetary-computer": _sign_planetary_computer}
)


def item_provider(item: pystac.Item) -> Provider | None:
    """The provider that serves ``item``'s assets, if payesh knows it (the first match)."""
    for asset in item.assets.values():
        provider = provider_for_href(asset.href)
        if provider is not None:
            return provider
    return None


def sign_items(items: Sequence[pystac.Item]) -> list[pystac.Item]:
    """Items ready to be read: signed copies where the provider signs, the others as given.

    Call it right before reading (signed URLs expire); the input items are not changed.

    Raises
    ------
    SourceError
        A signer is unknown, or its token service cannot be reached.
    """
    out = []
    for item in items:
        provider = item_provider(item)
        if provider is None or provider.sign is None:
            out.append(item)
            continue
        signer = SIGNERS.get(provider.sign)
        if signer is None:
            raise SourceError(
                f"provider {provider.name!r} asks for signer {provider.sign!r}, which payesh "
                f"does not have (it has: {', '.join(SIGNERS)})"
            )
        out.append(signer(item))
    return out
