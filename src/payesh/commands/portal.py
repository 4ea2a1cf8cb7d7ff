"""The portal's commands: ``serve`` (the municipality portal) and ``tokens`` (its
access tokens, each for one known city or for all).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from payesh.errors import PayeshError

__all__ = ["cmd_serve", "cmd_tokens"]


def cmd_serve(args: argparse.Namespace) -> int:
    from payesh.portal import serve

    print(f"payesh portal on http://{args.host}:{args.port}/ (stores under {args.store})")
    serve(
        args.store,
        host=args.host,
        port=args.port,
        tokens=args.tokens,
        rate=args.rate,
        burst=args.burst,
        log_level=args.log_level,
        workers=args.workers,
    )
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from payesh.portal.tokens import TokenStore, describe, tokens_file

    store = TokenStore(tokens_file(args.store, args.tokens))
    if args.action == "add":
        if args.admin == (args.city is not None):
            raise PayeshError("tokens add: name one CITY, or --admin for a token that sees all")
        city = None
        if args.city is not None:
            city = _known_city(args.city, args.store)
        rec, token = store.add(city, label=args.label or "")
        print(f"added token {rec.id} for {'every city (admin)' if rec.admin else rec.city}")
        print(f"store it now, it is not shown again ({store.path} keeps only its hash):")
        print(token)
    elif args.action == "list":
        recs = store.list()
        if not recs:
            print(f"no tokens in {store.path}")
        for rec in recs:
            d = describe(rec)
            state = f"revoked {d['revoked']}" if d["revoked"] else "active"
            print(f"{d['id']}  {d['scope']:<14} {d['created']}  {state:<33} {d['label']}")
    else:
        rec = store.revoke(args.id)
        print(f"revoked token {rec.id} ({'admin' if rec.admin else rec.city})")
    return 0


def _known_city(city: str, store: str) -> str:
    """A city name checked against the stores under ``store`` and the manifests."""
    from payesh.city import cities_dir, load_city

    if city.endswith((".yaml", ".yml")):
        return load_city(city).name
    if (Path(store) / city).is_dir():
        return city
    if (cities_dir() / f"{city}.yaml").is_file():
        return load_city(city).name
    raise PayeshError(
        f"unknown city {city!r}: no store {city!r} under {store} and no manifest "
        f"{city}.yaml in {cities_dir()}"
    )
