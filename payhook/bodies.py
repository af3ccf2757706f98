"""A stored callback body as an operator may read it: decoded, then its secrets masked."""

from __future__ import annotations

import codecs
import json

from payhook.masking import MASK, mask_text

# UTF-32 first: its little-endian mark begins with UTF-16's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def mask_body(raw: bytes) -> str:
    """`raw` decoded and masked by `mask_text`; withheld, with a marker saying why, when its
    encoding cannot be trusted.

    UTF-8 unless a UTF-16 or UTF-32 byte-order mark, or the NUL bytes of its first characters
    (as JSON's own detection reads them), say otherwise: read as UTF-8, such a body's names are
    split by NULs, none looks secret, and every value would be shown. The reading is trusted
    only if the rest is valid in that encoding and the same bytes read as UTF-8 have no
    secret-named member (else it is text behind a stray mark, which the other reading would
    show undecoded, its secrets unmasked)."""
    bom, encoding = next(((bom, name) for bom, name in _BOMS if raw.startswith(bom)),
                         (b"", json.detect_encoding(raw)))
    if encoding in ("utf-8", "utf-8-sig"):  # -sig: a UTF-8 mark, which mask_text keeps
        return mask_text(raw.decode("utf-8", errors="replace"))
    try:
        text = raw.decode(encoding)  # a mark is kept, as U+FEFF, as for UTF-8
    except UnicodeDecodeError:
        return f"{MASK} body withheld: not valid {encoding.upper()}"
    as_utf8 = raw[len(bom):].decode("utf-8", errors="replace")
    if mask_text(as_utf8) != as_utf8:
        return f"{MASK} body withheld: {encoding.upper()} by its first bytes, UTF-8 by its text"
    return mask_text(text)
