"""Verification keys, each with the algorithms it is pinned to.

Rules (RFC 8725 section 2.1 and PROTOCOL.md section 8):
- the algorithms come from the configured key, never from the token: an HMAC
  secret allows HS256/384/512 (each only when the secret is at least as long
  as its hash, RFC 7518 3.2); an RSA key RS* and PS*; an EC key the ES* of its
  curve; an Ed25519/Ed448 key EdDSA;
- ``none`` is never allowed, nor HMAC with a public key (a JWKS ``oct`` key is
  refused: a published document cannot hold a secret);
- RSA keys under 2048 bits are refused (NIST SP 800-131A).

Only ``cryptography`` here, no PyJWT: ``config`` checks ``AUTH_JWT_PUBLIC_KEY``
with it, and the sans-IO core (which reads settings) must not reach jwt.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from ..errors import ConfigError

PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)
MIN_RSA_BITS = 2048
MAX_PEM_BYTES = 64 * 1024

_HMAC = (("HS256", 32), ("HS384", 48), ("HS512", 64))
_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC = {
    "secp256r1": ("ES256",),
    "secp384r1": ("ES384",),
    "secp521r1": ("ES512",),
    "secp256k1": ("ES256K",),
}


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A key as PyJWT takes it, and the only algorithms a token may use with it."""

    key: PublicKey | bytes
    algorithms: tuple[str, ...]

    def __repr__(self) -> str:
        # A secret must never reach a log line, even through a repr.
        return f"VerificationKey({type(self.key).__name__}, {list(self.algorithms)})"


def hmac_key(secret: str) -> VerificationKey:
    data = secret.encode("utf-8")
    algorithms = tuple(name for name, size in _HMAC if len(data) >= size)
    if not algorithms:
        raise ValueError("an HMAC secret must be at least 32 bytes")
    return VerificationKey(data, algorithms)


def algorithms_for(key: object) -> tuple[str, ...]:
    """The algorithms a public key allows; ``ValueError`` for a key we do not use."""
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS}")
        names: tuple[str, ...] = _RSA
    elif isinstance(key, ec.EllipticCurvePublicKey):
        names = _EC.get(key.curve.name, ())
        if not names:
            raise ValueError(f"the EC curve {key.curve.name} has no JWT algorithm")
    elif isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        names = ("EdDSA",)
    elif isinstance(key, bytes):
        raise ValueError("an HMAC key is not a public key")
    else:
        raise ValueError(f"a {type(key).__name__} is not a public key JWTs are signed for")
    return names


def public_key(pem: str) -> VerificationKey:
    """A PEM public key (SPKI, PKCS#1 RSA, or an X.509 certificate's key)."""
    data = pem.encode("ascii", "replace")
    if b"PRIVATE KEY-----" in data:
        raise ValueError("it is a private key; the server needs only the public key")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            key: object = x509.load_pem_x509_certificate(data).public_key()
        else:
            key = serialization.load_pem_public_key(data)
    except ValueError:
        raise ValueError("not a PEM public key or certificate") from None
    except TypeError:  # an unsupported key type inside valid PEM
        raise ValueError("not a public key JWTs are signed for") from None
    algorithms = algorithms_for(key)
    return VerificationKey(key, algorithms)  # type: ignore[arg-type]  # narrowed by algorithms_for


def load_public_key_file(variable: str, path: str) -> str:
    """Read and check a PEM file at start-up; its text, or ``ConfigError``."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise ConfigError(variable, f"cannot read {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_PEM_BYTES:
        raise ConfigError(variable, f"{path!r} is larger than a PEM key")
    text = data.decode("ascii", "replace")
    try:
        public_key(text)
    except ValueError as exc:
        raise ConfigError(variable, f"{path!r}: {exc}") from None
    return text
