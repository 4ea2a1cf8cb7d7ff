"""pystac-client's IO with retries: :class:`RetryingStacApiIO`.

pystac-client's own retries (a urllib3 ``Retry`` on the session) only cover failures to
connect. :class:`RetryingStacApiIO` retries every request pystac-client makes (landing
page, conformance, collections, every page of a search) under a
:class:`~payesh.sources.retry.RetryPolicy`, with :func:`~payesh.sources.retry.with_retries`:
429/5xx answers, timeouts, dropped connections and bodies cut short or undecodable.
"""

from __future__ import annotations

import json
import logging
from copy import deepcopy
from typing import Any

import requests
from pystac_client.stac_api_io import StacApiIO

from payesh.sources.retry import (
    DEFAULT_POLICY,
    RetryPolicy,
    TransientError,
    check_response,
    with_retries,
)

__all__ = ["RetryingStacApiIO"]

log = logging.getLogger(__name__)

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class RetryingStacApiIO(StacApiIO):
    """pystac-client's ``StacApiIO`` whose every request is retried under a :class:`RetryPolicy`.

    429/5xx answers, timeouts, refused or reset connections and truncated bodies are
    retried with backoff; other 4xx answers fail at once with pystac-client's
    ``APIError``; a request that keeps failing raises :class:`RetriesExhausted`.
    """

    def __init__(self, policy: RetryPolicy = DEFAULT_POLICY, **kwargs: Any) -> None:
        # max_retries=None: no urllib3 retries underneath ours (they would multiply).
        super().__init__(timeout=policy.timeout, max_retries=None, **kwargs)
        self.policy = policy

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        """GET/POST ``href`` with retries; the decoded body of the response."""
        verb = (method or "GET").upper()
        if verb in _BODY_METHODS:
            req = requests.Request(method=verb, url=href, headers=headers, json=parameters)
        else:
            params = deepcopy(parameters) or {}
            req = requests.Request(method=verb, url=href, headers=headers, params=params)
        modified = self._req_modifier(req) if self._req_modifier else None
        prepped = self.session.prepare_request(modified or req)
        if verb in _BODY_METHODS:
            log.debug("%s %s %s", verb, prepped.url, json.dumps(parameters))
        send_kwargs = self.session.merge_environment_settings(
            str(prepped.url), proxies={}, stream=None, verify=True, cert=None
        )

        def once() -> str:
            resp = self.session.send(prepped, timeout=self.timeout, **send_kwargs)
            check_response(resp)
            try:
                return resp.content.decode("utf-8")
            except UnicodeDecodeError as err:
                raise TransientError(f"undecodable body: {err}", status=resp.status_code) from err

        return with_retries(once, url=f"{verb} {prepped.url}", policy=self.policy)
