"""Public keys that verify the API's bearer tokens, and the one algorithm each key allows.

The algorithm comes from the key, never from a token's header: an RS256 key accepts RS256 tokens
only, so neither `alg: none` nor an HS256 token signed with the public key's text (key confusion)
can pass.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = ["read_public_key", "algorithm_for", "HS256"]

HS256 = "HS256"
PEM_START = "-----BEGIN"
# ES256 is P-256; the other NIST curves have their own JWS algorithm (RFC 7518, 3.4).
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
MAX_KEY_FILE = 64 * 1024


def read_public_key(value: str) -> str:
    """The PEM text of an RSA or EC public key given as PEM text or as a file's path.

    Raises ValueError naming what is wrong (never the key itself: it is not secret, but it is long).
    """
    text = value.strip()
    if not text.startswith(PEM_START):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ValueError("is neither PEM text (-----BEGIN PUBLIC KEY-----) nor the path of a readable file")
        if path.stat().st_size > MAX_KEY_FILE:
            raise ValueError(f"names a file larger than {MAX_KEY_FILE} bytes: not a public key")
        text = path.read_text(encoding="ascii", errors="replace").strip()
    algorithm_for(text)  # a ValueError if it is not an RSA or EC public key
    return text


def algorithm_for(pem: str) -> str:
    """The one JWS algorithm a PEM public key verifies: RS256 for RSA, ES256/384/512 for EC."""
    try:
        key = load_pem_public_key(pem.encode("ascii", errors="replace"))
    except (ValueError, TypeError) as exc:
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY-----; a private key is refused)") from exc
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise ValueError(f"is an RSA key of {key.key_size} bits; at least 2048 are needed")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in EC_ALGORITHMS:
        return EC_ALGORITHMS[key.curve.name]
    raise ValueError("is neither an RSA nor a P-256/P-384/P-521 EC public key")
