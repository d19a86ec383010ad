"""The published run has one owner: ``lookup_api/contract`` (keys, item bytes, RunMeta, the reader).

No module outside the contract names a run-meta field by a bare string: not in an H* command, not
as ``meta["field"]`` / ``meta.get("field")``, not as a dict literal of fields.  Fields go through
:class:`~lookup_api.contract.meta.RunMeta` (typed) or ``F.<name>``.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from lookup_api.contract.items import (
    catalog_heads,
    encode_catalog_items,
    encode_items,
    expand,
    filtered,
    first_items,
    list_ids,
)
from lookup_api.contract.meta import FIELDS, RunMeta
from lookup_api.contract.reader import EMPTY, MISSING, parse_exclude, pick

ROOT = Path(__file__).resolve().parents[1]
HASH_COMMANDS = {"hset", "hget", "hmget", "hdel", "hexists", "hincrby", "hincrbyfloat", "hsetnx"}


def _strings(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.List | ast.Tuple | ast.Set):
        return [s for elt in node.elts for s in _strings(elt)]
    return []


def bare_fields(source: str, name: str = "<src>", dicts: bool = True) -> list[tuple[int, str]]:
    """Return ``(line, field)`` for each run-meta field named by a bare string in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source, name)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            attr = node.func.attr
            args = [*node.args, *(k.value for k in node.keywords)]
            if attr in HASH_COMMANDS:
                found += [(node.lineno, s) for a in args for s in _strings(a) if s in FIELDS]
            elif attr == "get" and "meta" in ast.unparse(node.func.value).lower() and node.args:
                found += [(node.lineno, s) for s in _strings(node.args[0]) if s in FIELDS]
        elif isinstance(node, ast.Subscript) and "meta" in ast.unparse(node.value).lower():
            found += [(node.lineno, s) for s in _strings(node.slice) if s in FIELDS]
        elif isinstance(node, ast.Dict) and dicts:
            keys = [k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
            if len(keys) >= 2 and len(keys) == len(node.keys) and all(k in FIELDS for k in keys):
                found += [(node.lineno, k) for k in keys]
    return found


# dict literals of field-like keys that are not the run meta (the rule on H* commands still applies)
OTHER_DICTS = {"batch/evaluation/evaluate.py": "the evaluation report's provenance (dataset, checksum, code)"}


def outside_contract() -> list[Path]:
    paths = [*sorted((ROOT / "batch").rglob("*.py")), *sorted((ROOT / "lookup_api").rglob("*.py"))]
    return [p for p in paths if "contract" not in p.relative_to(ROOT).parts]


def test_no_module_outside_the_contract_names_a_meta_field_by_a_bare_string():
    offences = [f"{p.relative_to(ROOT)}:{line}: {field!r}" for p in outside_contract()
                for line, field in bare_fields(p.read_text(), str(p),
                                               str(p.relative_to(ROOT)) not in OTHER_DICTS)]
    assert not offences, "use RunMeta / F.<field> instead:\n" + "\n".join(offences)


@pytest.mark.parametrize("snippet", [
    'client.hset(keys.meta(run), "status", "complete")',
    'pipe.hmget(keys.meta(run), ["created_at", "top_n"])',
    'x = int(store.meta(live).get("top_n") or 0)',
    'age = meta["created_ts"]',
    'return {"empty_lists": "0", "popular_items": "3"}',
    'store.client.hexists(store.keys.meta(r), "rolled_back_at")',
])
def test_the_check_catches_each_kind_of_bare_field(snippet):
    assert bare_fields(snippet), snippet


def test_the_check_leaves_other_strings_alone():
    assert not bare_fields('d = {"status": "ok"}\nx = request.args.get("n")\nhset(k, "1", v)')


def test_run_meta_round_trips_typed():
    meta = RunMeta(created_ts=1764000000.123, n_users=6040, top_n=50, timings={"load": 0.25},
                   genres=["Comedy", "Drama"], success=True, status="complete", extra={"future": "x"})
    stored = meta.to_hash()
    assert all(isinstance(v, str) for v in stored.values())
    back = RunMeta.from_hash({k.encode(): v.encode() for k, v in stored.items()})  # as HGETALL answers
    assert back == meta
    assert back.top_n == 50 and isinstance(back.top_n, int) and back.timings == {"load": 0.25}
    assert back.created_ts == 1764000000.123 and back.success is True and back.extra == {"future": "x"}
    assert back["top_n"] == "50" and back.get("absent") is None  # the stored form, for display


def items(*ids: int) -> bytes:
    return encode_items([{"movie_id": m, "title": f'T "{m}", {{"movie_id":9}}', "genres": ["Drama"],
                          "score": 1.0 / m, "predicted_rating": 3.5} for m in ids])


def test_filtered_fills_n_past_dropped_ids_and_counts_them_apart():
    raw = items(1, 2, 3, 4, 5, 6)
    heads = catalog_heads(encode_catalog_items(json.loads(expand(raw, {}))))
    out, hidden, excluded = filtered(raw, 3, heads, {2}, {3, 9})
    assert list_ids(out) == [1, 4, 5] and (hidden, excluded) == (1, 1)
    assert json.loads(out)[1] == json.loads(expand(raw, heads))[3]  # full items: title, genres, numbers
    assert filtered(raw, 3, heads)[0] == expand(first_items(raw, 3), heads)  # nothing dropped: a cut
    assert list_ids(filtered(raw, 10, heads, (), {1, 6})[0]) == [2, 3, 4, 5]  # shorter only when it runs out
    assert filtered(b"[]", 3, heads, {1}) == (b"[]", 0, 0)
    assert list_ids(filtered(items(7), 1, heads, (), {8})[0]) == [7]
    assert filtered(raw, 2, heads, {1, 2, 3}, {2, 4})[1:] == (3, 1)  # hidden wins when an id is both
    assert json.loads(filtered(raw, 1, {})[0])[0]["title"] == "Movie 1"  # not in the catalog


def test_filtered_serves_the_older_full_object_form():
    full = expand(items(1, 2, 3, 4), {})  # what lists looked like before the catalog
    out, hidden, excluded = filtered(full, 2, {}, {1}, {3})
    assert [it["movie_id"] for it in json.loads(out)] == [2, 4] and (hidden, excluded) == (1, 1)


def test_the_serving_rule():
    assert pick(None, False) == ("popular", None)  # unknown user: the cold start
    assert pick(None, True) == ("popular", MISSING)
    assert pick(b"[]", True) == ("popular", EMPTY)
    assert pick(items(1), None) == ("personalized", None)


@pytest.mark.parametrize("bad", ["x", "1,,2", "1,-2", "0", "1.5", " 1", "1," * 100 + "1", "99999999999"])
def test_parse_exclude_refuses(bad):
    with pytest.raises(ValueError):
        parse_exclude(bad)


def test_parse_exclude_accepts():
    assert parse_exclude("3,1,3") == {1, 3} and parse_exclude(None) == frozenset()
    assert len(parse_exclude(",".join(str(i) for i in range(1, 101)))) == 100
