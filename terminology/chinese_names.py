"""How a person's name is compared across members: 张三, 张 三, 張三 and Zhang San are one name.

Member systems write one name many ways: with a space between family and given name, in full-width
characters, in traditional characters from a scanner's OCR, or in pinyin from a system that
cannot store 汉字. Registration desks compare names by their reading, so matching does too: names are
folded (NFKC: full-width → half-width, case, spaces inside Chinese names) and read as toneless pinyin
with pypinyin (a maintained reading dictionary, heteronyms included, rather than a table of our own).

One module, two callers: the consortium record's matching (issue 13) and, later, pinyin search (issue 29).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Any

from pypinyin import Style, lazy_pinyin

_HAN = r"\u3400-\u9fff\uf900-\ufaff"
_ANY_HAN = re.compile(f"[{_HAN}]")
_SPACE_AROUND_HAN = re.compile(rf"(?<=[{_HAN}])\s+|\s+(?=[{_HAN}])")
_SEPARATORS = re.compile(r"[\s·•.\-_,，、]+")


def has_han(text: str) -> bool:
    return _ANY_HAN.search(text) is not None


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """The name as compared: NFKC, lower case, no spaces next to Chinese characters, single spaces."""
    folded = unicodedata.normalize("NFKC", text).casefold().strip()
    folded = _SPACE_AROUND_HAN.sub("", folded)
    return " ".join(folded.split())


@lru_cache(maxsize=65536)
def reading(text: str) -> str:
    """Toneless pinyin of the whole name without separators (`张 三` and `Zhang San` → `zhangsan`)."""
    syllables = lazy_pinyin(fold(text), style=Style.NORMAL, errors="default")
    return _SEPARATORS.sub("", "".join(syllables).casefold())


def full_name(human_name: Any) -> str:
    """One HumanName as a single string: `text`, else family and given in Chinese order for Chinese
    names (family first, no space) and in the order written otherwise."""
    if not isinstance(human_name, dict):
        return ""
    text = human_name.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    family = human_name.get("family") if isinstance(human_name.get("family"), str) else ""
    given = [g for g in human_name.get("given") or [] if isinstance(g, str)]
    parts = [p for p in (family, *given) if p]
    joiner = "" if any(has_han(p) for p in parts) else " "
    return joiner.join(parts)


def names_of(resource: Any) -> list[str]:
    """Every non-empty full name of a Patient (or any resource with `name: HumanName[]`)."""
    names = resource.get("name") if isinstance(resource, dict) else None
    if not isinstance(names, list):
        return []
    return [n for n in (full_name(h) for h in names) if n]
