"""The stored-item format: the one encoder (batch) and the one byte-level reader (API).

A stored list is compact UTF-8 JSON, an array of objects whose keys come in the order
``ITEM_KEYS``: ``movie_id`` (int), ``title`` (str), ``genres`` ([str]), ``score`` (the ranking
score, 4 decimals: higher is better, comparable only within one list) and ``predicted_rating``
(SVD's 1-5 estimate, clipped; 2 decimals, encoded from hundredths ``round(rating * 100)``).
Because ``movie_id`` comes first and the JSON is compact, ``,{"movie_id":`` starts every item
after the first and cannot occur inside a string (where each quote is escaped), so
:func:`first_items` cuts the first ``n`` items without parsing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence

log = logging.getLogger(__name__)

PERSONALIZED, POPULAR = "personalized", "popular"  # where a served list comes from
ITEM_KEYS = ("movie_id", "title", "genres", "score", "predicted_rating")
_START = b'[{"' + ITEM_KEYS[0].encode() + b'":'
_NEXT = b',{"' + ITEM_KEYS[0].encode() + b'":'
_RATING = tuple(f',"predicted_rating":{c / 100:.2f}}}' for c in range(1001))  # 0.00 .. 10.00


def item_head(movie_id: int, title: str, genres: Sequence[str]) -> str:
    """Return an item's JSON up to its scores: ``{"movie_id":1,"title":"..","genres":[..],``."""
    head = json.dumps({"movie_id": int(movie_id), "title": title, "genres": list(genres)},
                      separators=(",", ":"), ensure_ascii=False)
    return head[:-1] + ","


def encode_list(heads: Sequence[str], items: Iterable[int], scores: Iterable[float],
                hundredths: Iterable[int]) -> bytes:
    """Encode one ranked list: ``heads[i]`` per index ``i`` (negative: padding, skipped), best first.

    ``hundredths``: each predicted rating as ``round(rating * 100)``, in 0..1000.
    """
    parts = [f'{heads[i]}"score":{s:.4f}{_RATING[c]}'
             for i, s, c in zip(items, scores, hundredths, strict=True) if i >= 0]
    return ("[" + ",".join(parts) + "]").encode("utf-8")


def encode_items(items: Iterable[Mapping]) -> bytes:
    """Encode item mappings with exactly the keys ``ITEM_KEYS`` (same bytes as :func:`encode_list`)."""
    items = list(items)
    for item in items:
        if set(item) != set(ITEM_KEYS):
            raise ValueError(f"an item has keys {sorted(item)}, expected {list(ITEM_KEYS)}")
    heads = [item_head(it["movie_id"], it["title"], it["genres"]) for it in items]
    cents = [round(float(it["predicted_rating"]) * 100) for it in items]
    if not all(0 <= c <= 1000 for c in cents):
        raise ValueError("a predicted_rating is outside 0..10")
    return encode_list(heads, range(len(items)), [float(it["score"]) for it in items], cents)


def decode_items(raw: bytes | str) -> list[dict]:
    """Parse a stored list."""
    return json.loads(raw)


def first_items(raw: bytes, n: int) -> bytes:
    """Return the JSON array of the first ``n`` items of a stored list, cutting the bytes.

    A list not in the stored format (another key order, spaces) is parsed and re-serialised
    instead, with a warning: slower, never wrong.
    """
    if raw == b"[]":
        return raw
    if not raw.startswith(_START):
        log.warning("stored list is not in the compact item format; parsing it")
        return json.dumps(json.loads(raw)[:n], separators=(",", ":"), ensure_ascii=False).encode()
    pos = 0
    for _ in range(n):
        pos = raw.find(_NEXT, pos + 1)
        if pos < 0:
            return raw
    return raw[:pos] + b"]"
