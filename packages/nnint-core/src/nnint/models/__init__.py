"""Models bundled with nnint-core. Each sub-folder holding a ``model_card.json`` is one model."""

from __future__ import annotations

import json
from pathlib import Path

from nnint.engine import ModelSpec

HERE = Path(__file__).parent


def bundled_models() -> list[ModelSpec]:
    """ModelSpecs for every bundled model folder (a folder with model_card.json and weights)."""
    out = []
    for card_path in sorted(HERE.glob("*/model_card.json")):
        card = json.loads(card_path.read_text())
        out.append(
            ModelSpec(
                name=card["name"],
                backend=card.get("backend", "torch"),
                description=card.get("description", ""),
                license=card.get("license", "unknown"),
                path=card_path.parent,
                details={k: v for k, v in card.items() if k not in ("name", "backend", "description", "license")},
            )
        )
    return out
