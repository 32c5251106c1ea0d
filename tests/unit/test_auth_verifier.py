"""auth: keys pinned to their algorithms, every rejection reason, JWKS over file:// and HTTP."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from tests.jwt_support import (
    OTHER_SECRET,
    SECRET,
    claims,
    ec_key,
    ed_key,
    forged,
    hs_token,
    jwk,
    jwks,
    private_pem,
    public_pem,
    rsa_key,
    serve_jwks,
    signed,
)

from wsproto_trio.auth import keys
from wsproto_trio.auth.jwks import JwksKeys, parse
from wsproto_trio.auth.verifier import Verifier
from wsproto_trio.config import AuthSettings
from wsproto_trio.core.claims import Claims, Patterns
from wsproto_trio.errors import KeysUnavailable, TokenRejected


def hs_verifier(**changes: Any) -> Verifier:
    return Verifier(AuthSettings(secret=SECRET, **changes))


def pem_verifier(key: Any, **changes: Any) -> Verifier:
    return Verifier(AuthSettings(public_key=public_pem(key), **changes))


async def reason(verifier: Verifier, token: str) -> str:
    with pytest.raises(TokenRejected) as info:
        await verifier.verify(token)
    assert token not in info.value.reason or not token
    return info.value.reason


# Keys and their algorithms --------------------------------------------------------


def test_hmac_algorithms_follow_the_secret_length() -> None:
    assert keys.hmac_key("k" * 32).algorithms == ("HS256",)
    assert keys.hmac_key("k" * 48).algorithms == ("HS256", "HS384")
    assert keys.hmac_key("k" * 64).algorithms == ("HS256", "HS384", "HS512")
    with pytest.raises(ValueError, match="32 bytes"):
        keys.hmac_key("short")


def test_public_key_algorithms() -> None:
    rsa_algs = keys.public_key(public_pem(rsa_key())).algorithms
    assert rsa_algs == ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
    assert keys.public_key(public_pem(ec_key())).algorithms == ("ES256",)
    assert keys.public_key(public_pem(ed_key())).algorithms == ("EdDSA",)
    p384 = ec.generate_private_key(ec.SECP384R1())
    assert keys.public_key(public_pem(p384)).algorithms == ("ES384",)
    ed448_key = ed448.Ed448PrivateKey.generate()
    assert keys.algorithms_for(ed448_key.public_key()) == ("EdDSA",)
    for algorithms in (rsa_algs, ("ES256",), ("EdDSA",)):
        assert not any(name.startswith("HS") or name == "none" for name in algorithms)


def test_public_key_refusals() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="1024 bits"):
        keys.public_key(public_pem(small))
    with pytest.raises(ValueError, match="private key"):
        keys.public_key(private_pem(rsa_key()))
    with pytest.raises(ValueError, match="not a PEM"):
        keys.public_key("hello")


def test_verification_key_repr_hides_the_secret() -> None:
    assert SECRET not in repr(keys.hmac_key(SECRET))


# Each key kind --------------------------------------------------------------------


async def test_hs256() -> None:
    result = await hs_verifier().verify(hs_token(claims(rooms=["team-*"])))
    assert result.sub == "alice"
    assert result.rooms == Patterns(["team-*"])
    assert isinstance(result.exp, int)


async def test_hs384_and_hs512_with_a_long_enough_secret() -> None:
    secret = "z" * 64
    verifier = Verifier(AuthSettings(secret=secret))
    for alg in ("HS384", "HS512"):
        assert (await verifier.verify(hs_token(secret=secret, alg=alg))).sub == "alice"


async def test_hs384_with_a_secret_too_short_for_it() -> None:
    with warnings.catch_warnings():  # PyJWT warns the signer about the short key
        warnings.simplefilter("ignore")
        token = hs_token(secret=SECRET, alg="HS384")
    assert "'HS384' is not allowed" in await reason(hs_verifier(), token)


@pytest.mark.parametrize("alg", ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"])
async def test_rsa(alg: str) -> None:
    assert (await pem_verifier(rsa_key()).verify(signed(rsa_key(), alg))).sub == "alice"


async def test_es256() -> None:
    assert (await pem_verifier(ec_key()).verify(signed(ec_key(), "ES256"))).sub == "alice"


async def test_eddsa() -> None:
    assert (await pem_verifier(ed_key()).verify(signed(ed_key(), "EdDSA"))).sub == "alice"


async def test_key_type_pins_the_family() -> None:
    # An RSA-signed token against an EC key, and the other way round.
    assert "'RS256' is not allowed" in await reason(
        pem_verifier(ec_key()), signed(rsa_key(), "RS256")
    )
    assert "'ES256' is not allowed" in await reason(
        pem_verifier(rsa_key()), signed(ec_key(), "ES256")
    )


# Every rejection reason -----------------------------------------------------------


async def test_missing() -> None:
    assert await reason(hs_verifier(), "") == "missing token"


@pytest.mark.parametrize(
    "token",
    ["garbage", "a.b.c", "a.b", "....", "eyJhbGciOiJIUzI1NiJ9", "é.é.é", "x" * 20000],
)
async def test_malformed(token: str) -> None:
    assert (await reason(hs_verifier(), token)).startswith("malformed token")


async def test_header_without_alg_is_malformed() -> None:
    token = forged({"typ": "JWT"}, claims(), SECRET.encode())
    assert "no 'alg'" in await reason(hs_verifier(), token)


async def test_bad_signature() -> None:
    token = hs_token(secret=OTHER_SECRET)
    assert (await reason(hs_verifier(), token)).startswith("bad signature")
    other_rsa = rsa_key("other")
    assert (await reason(pem_verifier(rsa_key()), signed(other_rsa, "RS256"))).startswith(
        "bad signature"
    )


async def test_tampered_payload_is_a_bad_signature() -> None:
    head, _, sig = hs_token().split(".")
    body = forged({"alg": "HS256"}, claims(sub="mallory"), None).split(".")[1]
    assert (await reason(hs_verifier(), f"{head}.{body}.{sig}")).startswith("bad signature")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
async def test_alg_none(alg: str) -> None:
    token = forged({"alg": alg, "typ": "JWT"}, claims(), None)
    for verifier in (hs_verifier(), pem_verifier(rsa_key())):
        assert "'none' is not allowed" in await reason(verifier, token)


async def test_hmac_signed_with_the_public_key() -> None:
    pem = public_pem(rsa_key())
    token = forged({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
    assert "'HS256' is not allowed" in await reason(pem_verifier(rsa_key()), token)


async def test_expired() -> None:
    token = hs_token(claims(ttl=-60))
    assert await reason(hs_verifier(), token) == "token expired"


async def test_leeway_accepts_a_just_expired_token() -> None:
    token = hs_token(claims(ttl=-2))
    assert (await hs_verifier().verify(token)).sub == "alice"  # default leeway 5 s
    assert await reason(hs_verifier(leeway=0.0), token) == "token expired"


async def test_not_yet_valid_nbf() -> None:
    token = hs_token(claims(nbf=int(time.time()) + 600))
    assert await reason(hs_verifier(), token) == "token not yet valid: 'nbf' is in the future"


async def test_not_yet_valid_iat() -> None:
    token = hs_token(claims(iat=int(time.time()) + 600))
    assert await reason(hs_verifier(), token) == "token not yet valid: 'iat' is in the future"


async def test_nbf_within_leeway_is_accepted() -> None:
    token = hs_token(claims(nbf=int(time.time()) + 2))
    assert (await hs_verifier().verify(token)).sub == "alice"


async def test_audience() -> None:
    verifier = hs_verifier(audience="chat")
    assert (await verifier.verify(hs_token(claims(aud="chat")))).sub == "alice"
    assert (await verifier.verify(hs_token(claims(aud=["other", "chat"])))).sub == "alice"
    assert (await reason(verifier, hs_token(claims(aud="other")))).startswith("wrong audience")
    assert (await reason(verifier, hs_token(claims(aud=["a", "b"])))).startswith("wrong audience")
    assert (await reason(verifier, hs_token(claims()))).startswith("wrong audience")


async def test_audience_unset_ignores_aud() -> None:
    assert (await hs_verifier().verify(hs_token(claims(aud="anything")))).sub == "alice"


async def test_issuer() -> None:
    verifier = hs_verifier(issuer="https://idp.example")
    token = hs_token(claims(iss="https://idp.example"))
    assert (await verifier.verify(token)).sub == "alice"
    assert (await reason(verifier, hs_token(claims(iss="https://evil")))).startswith("wrong issuer")
    assert (await reason(verifier, hs_token(claims()))).startswith("wrong issuer")


@pytest.mark.parametrize("sub", [None, "", 7, ["alice"], "x" * 201])
async def test_no_valid_sub(sub: object) -> None:
    payload = claims(sub=None)
    if sub is not None:
        payload["sub"] = sub
    assert (await reason(hs_verifier(), hs_token(payload))).startswith("no valid sub")


@pytest.mark.parametrize(
    "extra",
    [{"rooms": "lobby"}, {"send": [1]}, {"chat": "no"}, {"info": []}, {"info": {"x": "y" * 2000}}],
)
async def test_wrong_shape(extra: dict[str, Any]) -> None:
    token = hs_token(claims(**extra))
    assert (await reason(hs_verifier(), token)).startswith("claims of the wrong shape")


async def test_signature_is_checked_before_claims() -> None:
    # A forged token learns nothing about which of its claims would be refused.
    token = hs_token(claims(ttl=-60, sub=None, rooms="x"), secret=OTHER_SECRET)
    assert (await reason(hs_verifier(), token)).startswith("bad signature")


async def test_order_exp_before_sub() -> None:
    token = hs_token(claims(ttl=-60, sub=None))
    assert await reason(hs_verifier(), token) == "token expired"


async def test_no_exp_is_allowed() -> None:
    result = await hs_verifier().verify(hs_token(claims(ttl=None)))
    assert result.exp is None


async def test_verified_claims_are_claims() -> None:
    token = hs_token(claims(rooms=["a"], send=[], chat=False, info={"n": 1}))
    result = await hs_verifier().verify(token)
    assert isinstance(result, Claims)
    assert (result.may_join("a"), result.may_send("a"), result.may_chat()) == (True, False, False)
    assert result.info == {"n": 1}


# JWKS -----------------------------------------------------------------------------


def write(path: Path, document: dict[str, Any]) -> None:
    path.write_text(json.dumps(document))


def test_parse_skips_unusable_entries() -> None:
    parsed = parse(
        jwks(
            {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"},
            {**jwk(rsa_key(), "priv"), "d": "AAAA"},
            jwk(rsa_key(), "no-kid") | {"kid": ""},
            jwk(rsa_key(), "enc") | {"use": "enc"},
            jwk(rsa_key(), "mismatch", alg="ES256"),
            {"kty": "RSA", "kid": "broken"},
            "not an object",  # type: ignore[arg-type]  # a document may hold anything
            jwk(rsa_key(), "good"),
            jwk(ec_key(), "ec", alg="ES256"),
            jwk(ed_key(), "ed"),
        )
    )
    assert sorted(parsed) == ["ec", "ed", "good"]
    assert parsed["good"].algorithms[0] == "RS256" and "PS256" in parsed["good"].algorithms
    assert parsed["ec"].algorithms == ("ES256",)
    assert parsed["ed"].algorithms == ("EdDSA",)


def test_parse_refuses_a_document_without_keys() -> None:
    with pytest.raises(KeysUnavailable):
        parse({"nope": []})


async def test_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1"), jwk(ec_key(), "k2"), jwk(ed_key(), "k3")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    assert (await verifier.verify(signed(rsa_key(), "RS256", kid="k1"))).sub == "alice"
    assert (await verifier.verify(signed(rsa_key(), "PS256", kid="k1"))).sub == "alice"
    assert (await verifier.verify(signed(ec_key(), "ES256", kid="k2"))).sub == "alice"
    assert (await verifier.verify(signed(ed_key(), "EdDSA", kid="k3"))).sub == "alice"
    # The kid picks the key: a token naming another key's kid fails.
    assert (await reason(verifier, signed(rsa_key(), "RS256", kid="k2"))).startswith(
        "algorithm 'RS256' is not allowed"
    )
    assert verifier.jwks is not None and verifier.jwks.fetches == 1


async def test_jwks_alg_pins_the_key(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1", alg="RS256")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    assert "'PS256' is not allowed" in await reason(verifier, signed(rsa_key(), "PS256", kid="k1"))


async def test_jwks_token_without_kid(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    assert "no 'kid'" in await reason(verifier, signed(rsa_key(), "RS256"))


async def test_jwks_hmac_is_never_allowed(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1"), {"kty": "oct", "k": "c2VjcmV0", "kid": "sym"}))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    pem = public_pem(rsa_key()).encode()
    forged_hs = forged({"alg": "HS256", "kid": "k1"}, claims(), pem)
    assert "'HS256' is not allowed" in await reason(verifier, forged_hs)
    symmetric = forged({"alg": "HS256", "kid": "sym"}, claims(), b"secret")
    assert "unknown key id" in await reason(verifier, symmetric)


async def test_jwks_rotation_and_refetch_limit(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key("old"), "old")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    assert verifier.jwks is not None
    assert (await verifier.verify(signed(rsa_key("old"), "RS256", kid="old"))).sub == "alice"
    assert verifier.jwks.fetches == 1

    # The provider rotates right after our fetch: within 10 s the new kid is
    # unknown and is not refetched, however often it is presented.
    write(path, jwks(jwk(rsa_key("new"), "new")))
    new_token = signed(rsa_key("new"), "RS256", kid="new")
    for _ in range(5):
        assert "unknown key id" in await reason(verifier, new_token)
    assert verifier.jwks.fetches == 1

    await trio.sleep(10)
    assert (await verifier.verify(new_token)).sub == "alice"
    assert verifier.jwks.fetches == 2
    # The old key left the document; it stays cached until the next refetch
    # (an unknown kid, or the cache's maximum age).
    assert "unknown key id" in await reason(verifier, signed(rsa_key(), "RS256", kid="bogus"))
    assert verifier.jwks.fetches == 2


async def test_jwks_refetched_when_stale(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key("old"), "old")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    old_token = signed(rsa_key("old"), "RS256", kid="old")
    assert (await verifier.verify(old_token)).sub == "alice"
    write(path, jwks(jwk(rsa_key("new"), "new")))
    await trio.sleep(301)  # past MAX_AGE: the withdrawn key stops working
    assert "unknown key id" in await reason(verifier, old_token)
    assert verifier.jwks is not None and verifier.jwks.fetches == 2


async def test_jwks_unavailable_then_available(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "jwks.json"
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    token = signed(rsa_key(), "RS256", kid="k1")
    with pytest.raises(KeysUnavailable):
        await verifier.verify(token)
    write(path, jwks(jwk(rsa_key(), "k1")))
    with pytest.raises(KeysUnavailable):  # not retried within 10 s
        await verifier.verify(token)
    assert verifier.jwks is not None and verifier.jwks.fetches == 1
    await trio.sleep(10)
    assert (await verifier.verify(token)).sub == "alice"


async def test_jwks_a_failed_refetch_keeps_the_keys(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    token = signed(rsa_key(), "RS256", kid="k1")
    assert (await verifier.verify(token)).sub == "alice"
    path.write_text("not json")
    await trio.sleep(301)
    assert (await verifier.verify(token)).sub == "alice"
    assert verifier.jwks is not None and verifier.jwks.fetches == 2


async def test_jwks_concurrent_unknown_kids_share_one_fetch(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "jwks.json"
    write(path, jwks(jwk(rsa_key(), "k1")))
    verifier = Verifier(AuthSettings(jwks_url=path.as_uri()))
    token = signed(rsa_key(), "RS256", kid="k1")
    results: list[str | None] = []

    async def one() -> None:
        results.append((await verifier.verify(token)).sub)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(one)
    assert results == ["alice"] * 20
    assert verifier.jwks is not None and verifier.jwks.fetches == 1


async def test_jwks_over_http_with_rotation(autojump_clock: trio.testing.MockClock) -> None:
    with serve_jwks(jwks(jwk(rsa_key("old"), "old"))) as server:
        verifier = Verifier(AuthSettings(jwks_url=server.url))
        assert (await verifier.verify(signed(rsa_key("old"), "RS256", kid="old"))).sub == "alice"
        server.document = jwks(jwk(rsa_key("old"), "old"), jwk(ec_key("new"), "new"))
        new_token = signed(ec_key("new"), "ES256", kid="new")
        assert "unknown key id" in await reason(verifier, new_token)
        assert "unknown key id" in await reason(verifier, new_token)
        assert server.requests == 1
        await trio.sleep(10)
        assert (await verifier.verify(new_token)).sub == "alice"
        assert server.requests == 2
        # Known keys need no request at all.
        for _ in range(3):
            await verifier.verify(signed(rsa_key("old"), "RS256", kid="old"))
        assert server.requests == 2


async def test_jwks_http_down_is_keys_unavailable() -> None:
    with serve_jwks(jwks()) as server:
        url = server.url
    verifier = Verifier(AuthSettings(jwks_url=url))  # the server is gone now
    with pytest.raises(KeysUnavailable, match="cannot fetch"):
        await verifier.verify(signed(rsa_key(), "RS256", kid="k1"))


async def test_jwks_injected_fetch_and_clock() -> None:
    documents = [jwks(jwk(rsa_key(), "k1"))]
    now = [0.0]
    source = JwksKeys("file:///unused", fetch=lambda: documents[-1], clock=lambda: now[0])
    assert await source.key("k1") is not None
    assert await source.key("k2") is None
    documents.append(jwks(jwk(rsa_key(), "k2")))
    now[0] = 9.9
    assert await source.key("k2") is None
    now[0] = 10.0
    assert await source.key("k2") is not None
    assert source.fetches == 2


def test_pyjwt_refuses_alg_none_to_decode_too() -> None:
    # Belt and braces: even past our own check, PyJWT with pinned algorithms refuses.
    token = forged({"alg": "none"}, claims(), None)
    with pytest.raises(jwt.InvalidAlgorithmError):
        jwt.decode(token, SECRET, algorithms=["HS256"])
