"""The stored-item format: the one encoder (batch) and the one byte-level reader (API).

A stored list is compact UTF-8 JSON, an array of objects whose keys come in the order
``ITEM_KEYS``: ``movie_id`` (int), ``title`` (str), ``genres`` ([str]), ``score`` (the ranking
score, 4 decimals: higher is better, comparable only within one list) and ``predicted_rating``
(SVD's 1-5 estimate, clipped; 2 decimals, encoded from hundredths ``round(rating * 100)``).
Because ``movie_id`` comes first and the JSON is compact, ``,{"movie_id":`` starts every item
after the first and cannot occur inside a string (where each quote is escaped), so
:func:`first_items` cuts the first ``n`` items without parsing, and :func:`select` skips dropped
ids (hidden titles, ``?exclude=``) reading only each item's leading id.

The batch side (:func:`item_heads`, :func:`encode_lists`, :func:`encode_one`) takes numpy
arrays but imports nothing: anything with ``.tolist()`` works, so the API never loads numpy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

PERSONALIZED, POPULAR = "personalized", "popular"  # where a served list comes from
ITEM_KEYS = ("movie_id", "title", "genres", "score", "predicted_rating")
_START = b'[{"' + ITEM_KEYS[0].encode() + b'":'
_NEXT = b',{"' + ITEM_KEYS[0].encode() + b'":'
_ID_AT = len(_START) - 1  # offset of the id within one item (its bytes start with '{')
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


def select(raw: bytes, n: int, drop: Collection[int] = ()) -> tuple[bytes, list[int]]:
    """Return the first ``n`` items of a stored list whose id is not in ``drop``, and the ids skipped.

    Only the items scanned to fill ``n`` are looked at: the skipped ids are those that would have
    been served but for ``drop``.  Without ``drop`` this is :func:`first_items`.
    """
    if not drop or raw == b"[]":
        return first_items(raw, n), []
    if not raw.startswith(_START):
        log.warning("stored list is not in the compact item format; parsing it")
        items = json.loads(raw)
        kept = [it for it in items if it["movie_id"] not in drop][:n]
        last = items.index(kept[-1]) + 1 if kept else len(items)
        skipped = [it["movie_id"] for it in items[:last] if it["movie_id"] in drop]
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode(), skipped
    kept, skipped, start, end = [], [], 1, len(raw) - 1
    while start < end and len(kept) < n:
        nxt = raw.find(_NEXT, start)
        stop = end if nxt < 0 else nxt
        at = start + _ID_AT
        movie_id = int(raw[at : raw.index(b",", at)])
        if movie_id in drop:
            skipped.append(movie_id)
        else:
            kept.append(raw[start:stop])
        if nxt < 0:
            break
        start = nxt + 1
    return b"[" + b",".join(kept) + b"]", skipped


def list_ids(raw: bytes) -> list[int]:
    """Return the movie ids of a stored list, in order (without parsing the rest)."""
    if raw == b"[]":
        return []
    if not raw.startswith(_START):
        return [it["movie_id"] for it in json.loads(raw)]
    out, pos = [], 0
    while pos >= 0:
        at = pos + 1 + _ID_AT
        out.append(int(raw[at : raw.index(b",", at)]))
        pos = raw.find(_NEXT, pos + 1)
    return out


# ---- the batch side: ranked index arrays -> stored lists (was batch/lists.py) ----

def item_heads(item_ids, movies) -> list[str]:
    """Return, per column, its item's JSON up to the scores (:func:`item_head`).

    ``item_ids``: the movie id of each column (array or sequence); ``movies``: an object whose
    ``lookup()`` maps a movie id to ``(title, genres)`` (``batch.movielens.Movies``).
    """
    lookup = movies.lookup()
    return [item_head(m, *lookup.get(m, (f"Movie {m}", []))) for m in _list(item_ids)]


def encode_lists(user_ids, items, scores, ratings, heads: list[str],
                 chunk: int = 4096) -> Iterator[tuple[int, bytes]]:
    """Yield ``(raw user id, stored list)`` for every row of ranked (n_users, n) arrays, -1 padded."""
    for start in range(0, len(user_ids), chunk):
        rows = slice(start, start + chunk)
        for user_id, *row in zip(_list(user_ids[rows]), _list(items[rows]), _list(scores[rows]),
                                 hundredths(ratings[rows]), strict=True):
            yield user_id, encode_list(heads, *row)


def encode_one(heads: list[str], items, scores, ratings) -> bytes:
    """Encode one ranked list (e.g. the popular list) from 1-d arrays (-1 items are skipped)."""
    return encode_list(heads, _list(items), _list(scores), hundredths(ratings))


def hundredths(ratings) -> list:
    """Return ``round(rating * 100)`` as the contract wants it, clipped to 0..1000 (-inf, NaN: 0).

    A numpy array (the batch's) is converted vectorised, with numpy already loaded by its caller;
    a plain sequence element by element.  Both round half to even.
    """
    if hasattr(ratings, "dtype"):
        import numpy as np  # the caller's array is numpy's: loaded already

        values = np.nan_to_num(np.asarray(ratings, dtype=np.float64), nan=0.0)
        return np.rint(np.clip(values, 0.0, 10.0) * 100).astype(np.int64).tolist()

    def one(r: float) -> int:
        return 0 if r != r else round(min(max(float(r), 0.0), 10.0) * 100)

    return [[one(r) for r in row] if isinstance(row, list | tuple) else one(row) for row in ratings]


def _list(values) -> list:
    return values.tolist() if hasattr(values, "tolist") else list(values)
