"""One exception tree for payesh, and the typed warnings for degraded-but-usable data.

Every error payesh raises on purpose derives from :class:`PayeshError`; the CLI prints
its message as one line and exits non-zero. Messages name the file, key or value at
fault and say how to fix it.
"""

from __future__ import annotations


class PayeshError(Exception):
    """Base class of every error payesh raises on purpose."""


class ManifestError(PayeshError):
    """A city manifest (or a file it points to) is missing or invalid."""


class SourceError(PayeshError):
    """Imagery could not be found or read: catalog, search, assets."""


class NoReadableItemsError(SourceError):
    """Every item of a batch (a product-month) is bad: none can be read.

    ``problems`` says why, one line per item; ``remote`` is true when any file was
    read over a network, where a failure may be an outage rather than a bad file.
    A month whose local files are all bad is stored as missing
    (:mod:`payesh.monthly`); a remote one stays an error, so that the run is retried
    and nothing is committed.
    """

    def __init__(self, message: str, *, problems: list[str], remote: bool) -> None:
        super().__init__(message)
        self.problems = problems
        self.remote = remote


class StoreError(PayeshError):
    """The indicator store cannot be opened, read or committed."""


class ExportError(PayeshError):
    """A layer, time or format asked for cannot be exported."""


class ModelError(PayeshError):
    """A trained model is missing, of the wrong version, or cannot be loaded."""


class PayeshWarning(UserWarning):
    """Base class of payesh's warnings: the data is usable but degraded."""


class CloudyMonthWarning(PayeshWarning):
    """A month had no (or very few) clear observations; its values are stored as missing."""


class MissingDataWarning(PayeshWarning):
    """A product or item had no data for part of the period; counted in ``valid_fraction``."""


class BadItemWarning(PayeshWarning):
    """A STAC item was skipped: an asset is missing, its CRS is absent or wrong, or its
    file is truncated, unreadable or fails its ``file:checksum``. The message names the
    item and the asset; the other items of the month are still read and the skipped ones
    counted (``skipped_items``)."""
