"""Loading RSA keys from configuration: PEM text, a path to a PEM file, or base64 DER."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationInfo


def _pem_or_der(value: str, base_dir: Path | None) -> tuple[bytes, bool]:
    """The key bytes and whether they are PEM; `value` is PEM text, a path, or base64 DER."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii"), True
    if "/" in text or text.endswith((".pem", ".key")):
        path = Path(text)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        if path.is_file():
            data = path.read_bytes()
            return data, data.lstrip().startswith(b"-----BEGIN")
    try:
        return base64.b64decode("".join(text.split()), validate=True), False
    except binascii.Error as exc:
        raise ValueError("not PEM text, an existing file, or base64 DER") from exc


def load_private_key(value: str, base_dir: Path | None = None) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#1 or PKCS#8), a PEM path, or base64 DER (either)."""
    data, is_pem = _pem_or_der(value, base_dir)
    if is_pem:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def load_public_key(value: str, base_dir: Path | None = None) -> rsa.RSAPublicKey:
    """An RSA public key from PEM (SubjectPublicKeyInfo or PKCS#1), a PEM path, or base64 DER."""
    data, is_pem = _pem_or_der(value, base_dir)
    if is_pem:
        try:
            key = serialization.load_pem_public_key(data)
        except ValueError:
            key = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        try:
            key = serialization.load_der_public_key(data)
        except ValueError:
            key = serialization.load_der_private_key(data, password=None).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def key_field(value: object, info: ValidationInfo) -> object:
    """A `mode="before"` validator for account key fields: a `*private_key` field loads a
    private key, any other a public one, relative to the validation context's `base_dir`."""
    if not isinstance(value, str):
        return value
    context = info.context
    base = context.get("base_dir") if isinstance(context, Mapping) else None
    private = (info.field_name or "").endswith("private_key")
    try:
        base_dir = Path(base) if base is not None else None
        return (load_private_key if private else load_public_key)(value, base_dir)
    except (OSError, TypeError, UnsupportedAlgorithm) as exc:  # pydantic reports ValueErrors
        raise ValueError(f"cannot load the key: {exc}") from exc
