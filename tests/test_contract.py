"""The published run has one owner: ``lookup_api/contract`` (keys, item bytes, RunMeta, the reader).

No module outside the contract names a run-meta field by a bare string: not in an H* command, not
as ``meta["field"]`` / ``meta.get("field")``, not as a dict literal of fields.  Fields go through
:class:`~lookup_api.contract.meta.RunMeta` (typed) or ``F.<name>``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lookup_api.contract.items import encode_items, first_items, list_ids, select
from lookup_api.contract.meta import FIELDS, RunMeta
from lookup_api.contract.reader import EMPTY, MISSING, filtered, parse_exclude, pick

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


def test_select_fills_n_past_dropped_ids_and_reports_them():
    raw = items(1, 2, 3, 4, 5, 6)
    out, skipped = select(raw, 3, {2, 3, 9})
    assert list_ids(out) == [1, 4, 5] and skipped == [2, 3]
    assert select(raw, 3)[0] == first_items(raw, 3)
    assert list_ids(select(raw, 10, {1, 6})[0]) == [2, 3, 4, 5]  # shorter only when the list runs out
    assert select(b"[]", 3, {1}) == (b"[]", [])
    assert list_ids(select(items(7), 1, {8})[0]) == [7]


def test_filtered_counts_hidden_and_excluded_apart():
    out, hidden, excluded = filtered(items(1, 2, 3, 4, 5), 2, frozenset({1}), frozenset({2, 3}))
    assert list_ids(out) == [4, 5] and (hidden, excluded) == (1, 2)


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
