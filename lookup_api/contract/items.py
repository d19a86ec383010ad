"""The stored-item format: the one encoder (batch) and the one byte-level reader (API).

A served item is a JSON object with the keys ``ITEM_KEYS`` in that order: ``movie_id`` (int),
``title`` (str), ``genres`` ([str]), ``score`` (the ranking score, 4 decimals: higher is better,
comparable only within one list) and ``predicted_rating`` (SVD's 1-5 estimate, clipped; 2
decimals, encoded from hundredths ``round(rating * 100)``).

Stored, titles and genres are not repeated in every list: a run stores its **catalog** once
(``<run>:catalog``, compact JSON ``{"<movie_id>": [title, [genres]], ...}``) and each list as
compact JSON triples ``[[movie_id,score,predicted_rating],...]``, best first.  Numbers hold no
brackets, so ``],[`` separates items and :func:`first_items` cuts a list without parsing it;
:func:`filtered` (the serving rule's byte work) drops hidden and excluded ids while it turns the
first ``n`` others into served items, splicing each movie's cached JSON head
(:func:`catalog_heads`) before its numbers, and :func:`expand` does that for a whole list.  A list
in the older full-object form (``[{"movie_id":...``) is still served as is (parsed when it must be
cut: slower, never wrong).

The batch side (:func:`item_heads`, :func:`encode_lists`, :func:`encode_one`, :func:`encode_catalog`)
takes numpy arrays but imports nothing: anything with ``.tolist()`` works, so the API never loads
numpy.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

PERSONALIZED, POPULAR = "personalized", "popular"  # where a served list comes from
ITEM_KEYS = ("movie_id", "title", "genres", "score", "predicted_rating")
_START, _SEP, _END = b"[[", b"],[", b"]]"
_FULL = b'[{"' + ITEM_KEYS[0].encode() + b'":'  # the older full-object form
_RATING = tuple(f"{c / 100:.2f}" for c in range(1001))  # 0.00 .. 10.00
_SCORE, _PRED = b'"score":', b',"predicted_rating":'
_ITEM = re.compile(rb"(\d+),([^,\]]*),([^\]]*)\]")  # one stored item: movie_id, score, rating


def item_head(movie_id: int, title: str, genres: Sequence[str]) -> str:
    """Return an item's JSON up to its scores: ``{"movie_id":1,"title":"..","genres":[..],``."""
    head = json.dumps({"movie_id": int(movie_id), "title": title, "genres": list(genres)},
                      separators=(",", ":"), ensure_ascii=False)
    return head[:-1] + ","


def encode_list(ids: Sequence[str], items: Iterable[int], scores: Iterable[float],
                hundredths: Iterable[int]) -> bytes:
    """Encode one ranked list: ``ids[i]`` (a movie id's text) per column ``i`` (negative: padding,
    skipped), best first.  ``hundredths``: each predicted rating as ``round(rating * 100)``, 0..1000."""
    parts = [f"{ids[i]},{s:.4f},{_RATING[c]}" for i, s, c in zip(items, scores, hundredths, strict=True)
             if i >= 0]
    return ("[[" + "],[".join(parts) + "]]").encode() if parts else b"[]"


def encode_items(items: Iterable[Mapping]) -> bytes:
    """Encode item mappings with exactly the keys ``ITEM_KEYS`` (same bytes as :func:`encode_list`);
    their titles and genres belong in the run's catalog (:func:`encode_catalog_items`)."""
    items = list(items)
    for item in items:
        if set(item) != set(ITEM_KEYS):
            raise ValueError(f"an item has keys {sorted(item)}, expected {list(ITEM_KEYS)}")
    cents = [round(float(it["predicted_rating"]) * 100) for it in items]
    if not all(0 <= c <= 1000 for c in cents):
        raise ValueError("a predicted_rating is outside 0..10")
    return encode_list([str(int(it["movie_id"])) for it in items], range(len(items)),
                       [float(it["score"]) for it in items], cents)


def encode_catalog_items(items: Iterable[Mapping]) -> bytes:
    """Return a catalog holding the titles and genres of item mappings."""
    return _catalog({int(it["movie_id"]): (it["title"], list(it["genres"])) for it in items})


def encode_catalog(item_ids, movies) -> bytes:
    """Return a run's catalog: each movie id of ``item_ids`` -> ``[title, genres]`` from ``movies``
    (an object whose ``lookup()`` maps ids to ``(title, genres)``, e.g. ``batch.movielens.Movies``)."""
    lookup = movies.lookup()
    return _catalog({m: lookup.get(m, (f"Movie {m}", [])) for m in _list(item_ids)})


def _catalog(entries: Mapping[int, tuple]) -> bytes:
    return json.dumps({str(m): [t, list(g)] for m, (t, g) in entries.items()}, ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def catalog_heads(raw: bytes | None) -> dict[int, bytes]:
    """Return movie id -> its item's JSON head (bytes) from a stored catalog (None: empty)."""
    if not raw:
        return {}
    return {int(m): item_head(int(m), t, g).encode("utf-8") for m, (t, g) in json.loads(raw).items()}


def expand(raw: bytes, heads: Mapping[int, bytes]) -> bytes:
    """Return a stored (cut) list as the served JSON array of full items."""
    if raw == b"[]" or not raw.startswith(_START):
        return raw  # empty, or the full-object form already
    out = []
    for chunk in raw[2:-2].split(_SEP):
        movie_id, score, rating = chunk.split(b",")
        head = heads.get(int(movie_id))
        if head is None:
            head = item_head(int(movie_id), f"Movie {int(movie_id)}", []).encode()
        out.append(head + _SCORE + score + _PRED + rating + b"}")
    return b"[" + b",".join(out) + b"]"


def decode_items(raw: bytes | str, heads: Mapping[int, bytes] | None = None) -> list[dict]:
    """Parse a stored list into items (titles and genres from ``heads``, :func:`catalog_heads`)."""
    raw = raw.encode() if isinstance(raw, str) else raw
    return json.loads(expand(raw, heads or {}))


def first_items(raw: bytes, n: int) -> bytes:
    """Return the first ``n`` items of a stored list, cutting the bytes (still the stored form)."""
    if raw == b"[]" or n <= 0:
        return b"[]" if n <= 0 else raw
    if not raw.startswith(_START):
        return _full_cut(raw, n)
    pos = 0
    for _ in range(n):
        pos = raw.find(_SEP, pos + 1)
        if pos < 0:
            return raw
    return raw[: pos + 1] + b"]"


def _full_cut(raw: bytes, n: int) -> bytes:
    return json.dumps(_full_items(raw)[:n], separators=(",", ":"), ensure_ascii=False).encode()


def _full_items(raw: bytes) -> list[dict]:
    """Parse a list in the older full-object form (or another, with a warning)."""
    if not raw.startswith(_FULL):
        log.warning("stored list is not in a compact item format; parsing it")
    return json.loads(raw)


def filtered(raw: bytes, n: int, heads: Mapping[int, bytes], hidden: Collection[int] = (),
             exclude: Collection[int] = ()) -> tuple[bytes, int, int]:
    """Return the served JSON array of the first ``n`` items of a stored list that are neither
    ``hidden`` nor in ``exclude`` (titles and genres from ``heads``, :func:`catalog_heads`), and
    how many of each were skipped to fill ``n``.

    One pass over the bytes, and only over the items it needs: those served and those skipped.
    Nothing to drop: a cut (:func:`first_items`), then :func:`expand`.
    """
    if raw == b"[]" or n <= 0:
        return b"[]", 0, 0
    if not raw.startswith(_START):  # the older full-object form: parsed (slower, never wrong)
        kept, n_hidden, n_excluded = [], 0, 0
        for item in _full_items(raw):
            movie_id = item["movie_id"]
            if movie_id in hidden:
                n_hidden += 1
            elif movie_id in exclude:
                n_excluded += 1
            else:
                kept.append(item)
                if len(kept) == n:
                    break
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False).encode(), n_hidden, n_excluded
    if not hidden and not exclude:
        return expand(first_items(raw, n), heads), 0, 0
    out, n_hidden, n_excluded = [], 0, 0
    for item in _ITEM.finditer(raw, 2):
        movie_id = int(item[1])
        if movie_id in hidden:
            n_hidden += 1
        elif movie_id in exclude:
            n_excluded += 1
        else:
            head = heads.get(movie_id)
            if head is None:
                head = item_head(movie_id, f"Movie {movie_id}", []).encode()
            out.append(head + _SCORE + item[2] + _PRED + item[3] + b"}")
            if len(out) == n:
                break
    return b"[" + b",".join(out) + b"]", n_hidden, n_excluded


def list_ids(raw: bytes) -> list[int]:
    """Return the movie ids of a stored or served list, in order."""
    if raw == b"[]":
        return []
    if not raw.startswith(_START):
        return [it["movie_id"] for it in json.loads(raw)]
    return [int(chunk[: chunk.index(b",")]) for chunk in raw[2:-2].split(_SEP)]


# ---- the batch side: ranked index arrays -> stored lists (was batch/lists.py) ----

def item_heads(item_ids, movies=None) -> list[str]:
    """Return, per column, its movie id's text (what :func:`encode_list` writes for the column).

    ``movies`` is not needed any more (titles and genres go in the catalog, :func:`encode_catalog`).
    """
    return [str(int(m)) for m in _list(item_ids)]


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
