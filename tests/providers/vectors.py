"""Loads the provider test vectors (copied verbatim from shared/vectors) into adapter inputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from providers.base import AccountConfig, Headers, RawCallback

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"


def load(provider: str) -> dict[str, Any]:
    """The whole vector file of one provider."""
    data: dict[str, Any] = json.loads((VECTORS / f"{provider}.json").read_text("utf-8"))
    return data


def account(provider: str, model: type[AccountConfig]) -> Any:
    """The vectors' account table, validated by the provider's account model."""
    return model.model_validate(load(provider)["account"], context={"base_dir": VECTORS})


def raw(case: dict[str, Any]) -> RawCallback:
    """The stored-request form of one callback case, received at `received_at_ms`."""
    request = case["request"]
    return RawCallback(
        body=request["body"].encode("utf-8"),
        headers=Headers(request["headers"]),
        received_at=datetime.fromtimestamp(case["received_at_ms"] / 1000, tz=UTC),
        remote="127.0.0.1",
    )


def callback_ids(provider: str) -> list[str]:
    """Case names, for parametrize ids."""
    return [c["name"] for c in load(provider)["callbacks"]]
