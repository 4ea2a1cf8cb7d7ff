"""Portal tokens (hashed, scoped, revocable) and the per-token rate limiter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from payesh.errors import PayeshError
from payesh.portal.tokens import TOKENS_FILENAME, RateLimiter, TokenError, TokenStore, tokens_file


def test_token_is_stored_hashed_and_verifies(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / TOKENS_FILENAME)
    rec, token = store.add("khoy", label="Khoy municipality")
    secret = token.split("_", 2)[2]
    text = store.path.read_text()
    assert secret not in text and token not in text
    raw = json.loads(text)["tokens"][0]
    assert len(bytes.fromhex(raw["salt"])) == 16 and len(bytes.fromhex(raw["hash"])) == 32
    assert store.path.stat().st_mode & 0o777 == 0o600

    assert store.verify(token) == rec
    assert store.verify(token) == rec  # cached
    assert rec.may_read("khoy") and not rec.may_read("urmia")
    assert store.verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert store.verify("pyh_" + rec.id + "_" + "x" * 43) is None
    assert store.verify("") is None and store.verify("Bearer " + token) is None


def test_same_secret_different_salt(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    store.add("a")
    store.add("a")
    salts = {t["salt"] for t in json.loads(store.path.read_text())["tokens"]}
    assert len(salts) == 2


def test_admin_sees_every_city_and_revocation_applies_at_once(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    admin, token = store.add(None)
    assert admin.admin and admin.may_read("khoy") and admin.may_read("maku")
    assert store.verify(token) is not None
    # a second process (the CLI) revokes it: the serving store notices the file changed
    TokenStore(store.path).revoke(admin.id)
    assert store.verify(token) is None
    assert [r.revoked is not None for r in store.list()] == [True]


def test_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    with pytest.raises(TokenError, match=r"invalid city name '\.\./x'"):
        store.add("../x")
    with pytest.raises(TokenError, match="no token with id 'nope'"):
        store.revoke("nope")
    store.path.write_text('{"tokens": [{"id": 1}]}')
    with pytest.raises(TokenError, match=r"t\.json: entry 0 is invalid"):
        store.list()
    store.path.write_text("not json")
    with pytest.raises(PayeshError, match=r"t\.json"):
        store.verify("pyh_000000000000_" + "a" * 43)


def test_tokens_file_lives_with_the_store(tmp_path: Path) -> None:
    assert tokens_file(tmp_path) == tmp_path / TOKENS_FILENAME
    assert tokens_file("s3://bucket/prefix", str(tmp_path / "t.json")) == tmp_path / "t.json"
    with pytest.raises(TokenError, match="--tokens"):
        tokens_file("s3://bucket/prefix")


def test_rate_limiter_token_bucket() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)  # one request per 0.5 s refills
    assert RateLimiter.retry_after(wait) == "1"
    assert limiter.take("b") == 0.0  # buckets are per key
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0
    now[0] += 100.0  # an idle spell refills to the burst size, not beyond
    assert [limiter.take("a") for _ in range(4)][-1] > 0
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)
