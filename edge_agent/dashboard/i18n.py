"""Language choice (English / Simplified Chinese) and the page texts.

The browser's Accept-Language picks the language unless the person chose one
with the switch (a ``lang`` cookie). Texts live in ``static/i18n/<lang>.json``;
numbers and dates are formatted in the browser with ``Intl`` for that language.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

LANGUAGES = ("en", "zh-CN")
DEFAULT = "en"
I18N_DIR = Path(__file__).resolve().parent / "static" / "i18n"


def _match(tag: str) -> str | None:
    tag = tag.strip().lower()
    if tag.startswith("zh"):
        return "zh-CN"  # zh, zh-CN, zh-Hans…: the one Chinese we ship (Simplified)
    if tag.startswith("en"):
        return "en"
    return None


def negotiate(accept_language: str | None, chosen: str | None = None) -> str:
    """The switch's cookie wins; otherwise the supported language the browser prefers most."""
    if chosen in LANGUAGES:
        return chosen
    best, best_q = DEFAULT, -1.0
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        language = _match(tag)
        # Equal weights keep the browser's order.
        if language and q > 0 and q - position * 1e-6 > best_q:
            best, best_q = language, q - position * 1e-6
    return best


@lru_cache(maxsize=len(LANGUAGES))
def texts(language: str) -> dict[str, str]:
    return json.loads((I18N_DIR / f"{language}.json").read_text(encoding="utf-8"))
