"""Key values in the providers file: every form CONTRACT §2 names loads, and a refusal never
quotes the value (a private key must not reach stderr or a container's log)."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from payhook.accounts import load_accounts
from providers.errors import ConfigError
from providers.opay import OPayAccount

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors" / "keys"
PRIVATE = VECTORS / "opay-merchant-private.pem"
PUBLIC = VECTORS / "opay-provider-public.pem"
FORMS = ("pkcs1", "pkcs8", "spki")
# Longer than a file name may be (NAME_MAX): probing such a `/`-separated piece as a path
# raises ENAMETOOLONG rather than answering "no such file".
NAME_MAX = 255


def _first_piece(text: str) -> int:
    """The length of the text's first `/`-free run: the path component a probe reaches first."""
    return len(text.split("/")[0].encode())


@pytest.fixture(scope="module")
def long_piece_keys() -> dict[str, tuple[rsa.RSAPublicKey, str]]:
    """For each form, the public key and a base64 DER text whose first `/`-free run is longer
    than a file name: fresh 1024-bit private keys until one fits (about 1 in 50 per form), and
    a public key built from a seeded modulus (SPKI loading checks no factors)."""
    found: dict[str, tuple[rsa.RSAPublicKey, str]] = {}
    formats = {"pkcs1": ser.PrivateFormat.TraditionalOpenSSL, "pkcs8": ser.PrivateFormat.PKCS8}
    for _ in range(3000):
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - fast to make
        for form, private_format in formats.items():
            der = key.private_bytes(ser.Encoding.DER, private_format, ser.NoEncryption())
            text = base64.b64encode(der).decode("ascii")
            if form not in found and _first_piece(text) > NAME_MAX:
                found[form] = (key.public_key(), text)
        if len(found) == len(formats):
            break
    assert len(found) == len(formats), f"no key with a long first piece: {sorted(found)}"
    seeded = random.Random(1)
    while "spki" not in found:
        public = rsa.RSAPublicNumbers(65537, seeded.getrandbits(2048) | 1 << 2047 | 1).public_key()
        der = public.public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
        text = base64.b64encode(der).decode("ascii")
        if _first_piece(text) > NAME_MAX:
            found["spki"] = (public, text)
    return found


def _opay(private: str, public: str) -> str:
    """An OPay account whose key values are TOML strings (JSON quoting is valid TOML)."""
    return f"""[providers.opay.default]
base_url = "https://payapi.opayweb.com"
client_auth_key = "ck"
head_merchant_id = "256620000000001"
merchant_id = "256620000000002"
merchant_private_key = {json.dumps(private)}
provider_public_key = {json.dumps(public)}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "payhook.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("wrapped", [False, True], ids=["one_line", "wrapped_64"])
@pytest.mark.parametrize("form", FORMS)
def test_base64_der_with_a_piece_longer_than_a_file_name_loads(
    tmp_path: Path, long_piece_keys: dict[str, tuple[rsa.RSAPublicKey, str]], form: str,
    wrapped: bool,
) -> None:
    """A base64 DER key (PKCS#1 or PKCS#8 private, SPKI public) whose text starts with a
    `/`-free run longer than a file name loads, on one line or wrapped at 64 columns as a
    pasted PEM body: probing it as a path must not refuse it."""
    expected, text = long_piece_keys[form]
    assert _first_piece(text) > NAME_MAX
    if wrapped:
        text = "\n".join(text[i:i + 64] for i in range(0, len(text), 64))
    private, public = (str(PRIVATE), text) if form == "spki" else (text, str(PUBLIC))
    account = load_accounts(_write(tmp_path, _opay(private, public))).get("opay")
    assert account is not None
    config = account.config
    assert isinstance(config, OPayAccount)
    loaded = (config.provider_public_key if form == "spki"
              else config.merchant_private_key.public_key())
    assert loaded.public_numbers() == expected.public_numbers()


def _corrupt(text: str) -> str:
    """Valid base64 of the same length whose DER no longer parses."""
    middle = len(text) // 2
    return text[:middle] + ("A" if text[middle] != "A" else "B") * 8 + text[middle + 8:]


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                             ser.NoEncryption()).decode("ascii")


Keys = dict[str, tuple[rsa.RSAPublicKey, str]]
BAD_VALUES: dict[str, Callable[[Keys], str]] = {
    "corrupt_der": lambda keys: _corrupt(keys["pkcs8"][1]),
    "truncated_der": lambda keys: keys["pkcs1"][1][:-40],
    "not_base64": lambda keys: keys["pkcs8"][1][:300] + "!" + keys["pkcs8"][1][300:],
    "garbage_pem": lambda keys: "-----BEGIN PRIVATE KEY-----\n" + keys["pkcs8"][1][:400]
    + "\n-----END PRIVATE KEY-----\n",
    "non_ascii_pem": lambda keys: "-----BEGIN PRIVATE KEY-----\n\u00e9" + keys["pkcs8"][1][:400],
    "ec_key": lambda keys: _ec_pem(),
    "public_for_private": lambda keys: keys["spki"][1],
}


@pytest.mark.parametrize("bad", sorted(BAD_VALUES))
def test_a_bad_key_is_refused_naming_where_without_quoting_it(
    tmp_path: Path, long_piece_keys: Keys, bad: str,
) -> None:
    """Whatever makes a key value unusable, the refusal names the file, the table and the key,
    and contains no piece of the value (it may be a private key: stderr goes to the logs)."""
    value = BAD_VALUES[bad](long_piece_keys)
    path = _write(tmp_path, _opay(value, str(PUBLIC)))
    with pytest.raises(ConfigError) as caught:
        load_accounts(path)
    message = str(caught.value)
    assert f"{path}: [providers.opay.default] merchant_private_key" in message
    body = "".join(line for line in value.splitlines() if not line.startswith("-----"))
    leaked = [body[i:i + 12] for i in range(len(body) - 11) if body[i:i + 12] in message]
    assert not leaked, message


def test_a_key_path_that_is_not_a_readable_file_is_named_as_such(tmp_path: Path) -> None:
    """A path value to a missing file or to a directory is refused, naming the key; a path to
    a PEM file, relative to the providers file, loads."""
    (tmp_path / "keys").mkdir()
    for value in ("keys/missing.pem", "keys", str(tmp_path / "keys") + "/"):
        with pytest.raises(ConfigError, match=r"\[providers\.opay\.default\] merchant_private_key"):
            load_accounts(_write(tmp_path, _opay(value, str(PUBLIC))))
    (tmp_path / "keys" / "m.pem").write_bytes(PRIVATE.read_bytes())
    assert load_accounts(_write(tmp_path, _opay("keys/m.pem", str(PUBLIC)))).get("opay")
