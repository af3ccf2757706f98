"""RSA primitives the providers use: SHA256withRSA and block-wise PKCS#1 v1.5 encryption."""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.errors import Rejected

_PAD_OVERHEAD = 11  # PKCS#1 v1.5 needs 11 bytes of padding per block


def sign_sha256(key: rsa.RSAPrivateKey, message: bytes) -> str:
    """Base64 SHA256withRSA signature of `message`."""
    return base64.b64encode(key.sign(message, padding.PKCS1v15(), hashes.SHA256())).decode("ascii")


def verify_sha256(key: rsa.RSAPublicKey, message: bytes, signature_b64: str) -> None:
    """Check a base64 SHA256withRSA signature; raise `Rejected("bad_signature")` if it is wrong."""
    try:
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise Rejected("bad_signature") from exc


def encrypt_blocks(key: rsa.RSAPublicKey, plaintext: bytes) -> str:
    """Base64 of the plaintext encrypted in (key size/8 - 11)-byte chunks, blocks concatenated."""
    chunk = key.key_size // 8 - _PAD_OVERHEAD
    blocks = [
        key.encrypt(plaintext[i : i + chunk], padding.PKCS1v15())
        for i in range(0, max(len(plaintext), 1), chunk)
    ]
    return base64.b64encode(b"".join(blocks)).decode("ascii")


def decrypt_blocks(key: rsa.RSAPrivateKey, ciphertext_b64: str) -> bytes:
    """Inverse of `encrypt_blocks`; raise `Rejected("decrypt_failed")` on any damage."""
    size = key.key_size // 8
    try:
        data = base64.b64decode(ciphertext_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected("decrypt_failed", "not base64") from exc
    if not data or len(data) % size:
        raise Rejected("decrypt_failed", "not a whole number of RSA blocks")
    try:
        return b"".join(
            key.decrypt(data[i : i + size], padding.PKCS1v15()) for i in range(0, len(data), size)
        )
    except ValueError as exc:
        raise Rejected("decrypt_failed") from exc
