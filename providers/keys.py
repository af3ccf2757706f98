"""Loading RSA keys from configuration: PEM text, a path to a PEM file, or base64 DER."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationInfo


class KeyLoadError(ValueError):
    """A key value cannot be used; the message describes why and never quotes the value."""


_NOT_A_KEY = ("not PEM text, an existing file, or base64 DER "
              "(PKCS#1 or PKCS#8 private, SubjectPublicKeyInfo public)")


def _key_file(text: str, base_dir: Path | None) -> Path | None:
    """The file `text` names, if it is one. Only a one-line value with a `/` or a key file's
    suffix is taken for a path; base64 has `/` too, so a probe that fails is "not a file":
    a `/`-free run of a base64 DER key longer than a file name may be makes `is_file()` raise
    ENAMETOOLONG rather than answer False."""
    if "\n" in text or "\r" in text or not ("/" in text or text.endswith((".pem", ".key"))):
        return None
    path = Path(text)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def _pem_or_der(value: str, base_dir: Path | None) -> tuple[bytes, bool]:
    """The key bytes and whether they are PEM; `value` is PEM text, a path, or base64 DER."""
    text = value.strip()
    if text.startswith("-----BEGIN"):
        return text.encode("ascii"), True
    path = _key_file(text, base_dir)
    if path is not None:
        data = path.read_bytes()
        return data, data.lstrip().startswith(b"-----BEGIN")
    try:
        return base64.b64decode("".join(text.split()), validate=True), False
    except binascii.Error:
        raise KeyLoadError(_NOT_A_KEY) from None


def load_private_key(value: str, base_dir: Path | None = None) -> rsa.RSAPrivateKey:
    """An RSA private key from PEM (PKCS#1 or PKCS#8), a PEM path, or base64 DER (either)."""
    data, is_pem = _pem_or_der(value, base_dir)
    if is_pem:
        key = serialization.load_pem_private_key(data, password=None)
    else:
        key = serialization.load_der_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise KeyLoadError("not an RSA private key")
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
        raise KeyLoadError("not an RSA public key")
    return key


def _safe_reason(exc: Exception) -> str:
    """Why a key did not load, in words that cannot contain the value: an OSError's message
    carries its file name (for a base64 key taken for a path, the key itself), and the
    parsers' messages are not ours to vouch for."""
    if isinstance(exc, KeyLoadError):
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read the key file ({exc.strerror or type(exc).__name__})"
    return f"{_NOT_A_KEY} (the parser raised {type(exc).__name__})"


def key_field(value: object, info: ValidationInfo) -> object:
    """A `mode="before"` validator for account key fields: a `*private_key` field loads a
    private key, any other a public one, relative to the validation context's `base_dir`.
    Any failure becomes a `KeyLoadError` (reported by pydantic with the file, table and key)
    holding only a description: the value may be a private key, and the message goes to
    stderr."""
    if not isinstance(value, str):
        return value
    context = info.context
    base = context.get("base_dir") if isinstance(context, Mapping) else None
    private = (info.field_name or "").endswith("private_key")
    try:
        base_dir = Path(base) if base is not None else None
        return (load_private_key if private else load_public_key)(value, base_dir)
    except Exception as exc:  # whatever it is, only a safe description leaves
        raise KeyLoadError(f"cannot load the key: {_safe_reason(exc)}") from None
