"""``evaluate``: every row of :mod:`batch.evaluation.rows` in one run, on one phase of each protocol.

Random protocol: the original 60/20/20 split by user; every user is warm.  Temporal protocol: one
global time split (:mod:`batch.evaluation.temporal`); warm users (ratings before the cut) are scored
on every row, cold users (none before it) on exactly the list the batch publishes
(:func:`batch.pipeline.popular` on the same models), and *all* stacks both (user-weighted means).
Every list is scored by :func:`batch.evaluation.scoring.score`.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from batch import pipeline
from batch.download import Release
from batch.evaluation.fallback import describe as describe_rule
from batch.evaluation.fallback import fallback_comparison
from batch.evaluation.protocol import PROTOCOLS, Phase, sample_users, svd_errors
from batch.evaluation.rows import (
    ALL_ROWS,
    COLD_ROWS,
    ORIGINAL_PROTOCOL_ROWS,
    TUNED_ROWS,
    WARM_ROWS,
    Row,
    describe,
    original,
    settings_for,
)
from batch.evaluation.scoring import Scores, pad, paired_difference, score, served
from batch.movielens import Movies, Ratings
from batch.movielens_ratings import load_dir
from batch.params import Params
from lookup_api.contract.errors import RecsysError

log = logging.getLogger(__name__)

SVD_ROWS = ("svd_full", "original", "default")  # rows whose ranking uses SVD: their rating errors too
EVAL_EXTRA = ("matplotlib",)  # what the `eval` extra adds to `batch` (pyproject.toml)


def require_eval_extra() -> None:
    """Raise a one-line RecsysError when the `eval` extra is not installed (the nightly image lacks it)."""
    missing = [m for m in EVAL_EXTRA if importlib.util.find_spec(m) is None]
    if missing:
        raise RecsysError(f"the evaluation needs the eval extra ({', '.join(missing)} missing): "
                          "run `uv sync --extra batch --extra eval`")


def load_dataset(data_dir: Path, release: Release) -> tuple[Ratings, Movies, dict]:
    """Return the ratings, movies and provenance (release, checksum, code) of the release in ``data_dir``
    (downloaded into it when missing), for ``evaluate`` and ``tune``."""
    from batch.job import code_version, dataset_checksum, resolve_data_dir

    directory = resolve_data_dir(data_dir, release=release)
    ratings, movies = load_dir(directory, release.fmt)
    return ratings, movies, {"dataset": release.name, "dataset_sha256": dataset_checksum(directory, release),
                             "code_version": code_version()}


def _day(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def row_name(row: Row, params: Params, baselines: dict) -> str:
    """The row's display name; a tuned baseline's carries its chosen settings."""
    if row.settings == "tuned":
        chosen = baselines.get(row.key, {}).get("settings")
        return f"{row.name.replace('(tuned)', '').strip()} ({describe(chosen) if chosen else 'not tuned'})"
    if row.key == "default":
        return f"default pipeline ({params.ranker}, {params.blend_form})" if params.ranker == "blend" \
            else "default pipeline (svd)"
    return row.name


def evaluate(ratings: Ratings, movies: Movies, params: Params, protocol: str, *,
             baselines: dict | None = None, phase: str = "test", k: int = 50, seed: int = 42,
             original_users: int = 200) -> dict:
    """Fit every row's model on ``protocol``'s fitted part, score it on ``phase``; a JSON-ready report.

    ``params``: the default pipeline (normally the tuned file's); ``baselines``: the tuned file's
    section for this protocol (``{row key: {"settings": {...}, ...}}``).
    """
    started = time.perf_counter()
    baselines = baselines or {}
    ph = Phase.of(ratings, movies, protocol, phase, seed)
    fold, cache, data = ph.fold, ph.cache, ph.fold.data
    warm = fold.users()
    truth = fold.truth(warm)
    rows: list[dict] = []
    scored: dict[str, Scores] = {}
    lists: dict[str, np.ndarray] = {}

    def add(row: Row, name: str, recs: np.ndarray, segment: str, began: float, users: int,
            row_truth=truth) -> None:
        scored[row.key] = result = score(recs, row_truth, k)
        lists[row.key] = pad(recs, k)
        entry = {"key": row.key, "name": name, "segment": segment, "protocol": row.protocol, "users": users,
                 "curves": result.curves, "seconds": round(time.perf_counter() - began, 3)}
        if row.settings == "tuned":
            entry["settings"] = baselines.get(row.key, {}).get("settings", {})
        if protocol == "random" and row.key in SVD_ROWS:
            entry.update(svd_errors(fold, cache.source("svd", settings_for(row, params, baselines))))
        rows.append(entry)
        log.info("%s (%s): P@10 %.4f, %s users", name, segment, result.curves["precision"][9], users)

    for row in WARM_ROWS:
        began = time.perf_counter()
        recs = cache.lists(row.model, settings_for(row, params, baselines), warm, k)
        add(row, row_name(row, params, baselines), recs, "warm", began, len(warm))
    out: dict = {}
    if protocol == "random":
        sampled = sample_users(warm, original_users, seed)
        for row in ORIGINAL_PROTOCOL_ROWS:
            began = time.perf_counter()
            recs = cache.lists(row.model, settings_for(row, params, baselines), sampled, k,
                               exclude_seen=False)
            add(row, row.name, recs, "warm", began, len(sampled), fold.truth(sampled))
    else:
        cold = ph.cold
        cold_truth = cold.truth()
        for row in COLD_ROWS:
            began = time.perf_counter()
            rule = settings_for(row, params, baselines)
            items = cache.source("popularity", rule).top(rule.top_n)[0]
            add(row, f"{row.name} ({describe_rule(rule)})", served(items, len(cold), k), "cold", began,
                len(cold), cold_truth)
        everyone = truth.stack(cold_truth)
        for warm_key, cold_key, name in ALL_ROWS:
            began = time.perf_counter()
            recs = np.concatenate([lists[warm_key], lists[cold_key]])
            add(Row(f"{warm_key}@all", name, "", ""), name, recs, "all", began, len(everyone), everyone)
        out["fallback"] = fallback_comparison(ratings, ph.split, params, phase)
        published, scores, _ = pipeline.popular(cache.models(params), params.top_n)
        out["published_fallback"] = {"movie_ids": data.item_ids[published].tolist(),
                                     "scores": [round(float(s), 6) for s in scores]}
    # The default against every tuned baseline, paired over the same (warm) users.
    paired = {r.key: paired_difference(scored["default"], scored[r.key]) for r in TUNED_ROWS}
    best = max(TUNED_ROWS, key=lambda r: scored[r.key].key()).key
    seconds = time.perf_counter() - started
    return {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "protocol": _describe(protocol, ph, phase, seed, original_users, len(warm), k),
        "params": {"default": params.to_dict(), "original": original(params).to_dict()},
        "baselines": {r.key: baselines.get(r.key, {}) for r in TUNED_ROWS},
        "rows": rows,
        "paired": {"users": len(warm), "best_baseline": best, "default_minus": paired},
        **out,
        "timings": {**{n: round(v, 2) for n, v in cache.timings.items()}, "total": round(seconds, 2)},
    }


def _describe(protocol: str, ph: Phase, phase: str, seed: int, original_users: int, n_warm: int,
              k: int) -> dict:
    split, fold = ph.split, ph.fold
    sizes = {"train": len(split.train), "validation": len(split.validation), "test": len(split.test)}
    common = {"phase": phase, "fit_on": "train" if phase == "validation" else "train+validation",
              "sizes": sizes, "relevance": f"held-out rating >= {fold.threshold:g}",
              "catalogue": fold.data.n_items, "k": k}
    if protocol == "random":
        return {"name": "random",
                "split": "60/20/20 of ratings, stratified by user (sklearn train_test_split: test first, "
                         "then validation out of the rest)", "seed": seed, **common,
                "fair": "every user with a relevant held-out movie; fitted movies never recommended",
                "original": f"{min(original_users, n_warm)} users sampled (seed {seed}); fitted movies "
                            "not excluded",
                "users": n_warm}
    n_cold = len(ph.cold)
    return {"name": "temporal",
            "split": "one global split by time: train = earliest 80% of ratings, validation = next 10%, "
                     "test = latest 10% (ratings sharing a timestamp stay on one side)",
            "cuts": {"validation": split.validation_cut, "test": split.test_cut,
                     "validation_utc": _day(split.validation_cut), "test_utc": _day(split.test_cut)},
            **common,
            "warm": "users with ratings before the cut and a relevant held-out movie; rated movies never "
                    "recommended",
            "cold": "users with no rating before the cut and a relevant held-out movie: served the "
                    "published popular list as is",
            "all": "warm and cold users together (user-weighted)",
            "users": {"warm": n_warm, "cold": n_cold, "all": n_warm + n_cold}}


def evaluate_protocols(ratings: Ratings, movies: Movies, params: Params,
                       protocols: tuple[str, ...] = PROTOCOLS, *, baselines: dict | None = None,
                       phase: str = "test", original_users: int = 200) -> dict:
    """Run ``evaluate`` under each protocol; one JSON-ready document.

    ``baselines``: the tuned file's ``baselines`` (``{protocol: {row key: {"settings": ...}}}``).
    """
    started = time.perf_counter()
    baselines = baselines or {}
    for name in protocols:
        if name not in PROTOCOLS:
            raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    out = {name: evaluate(ratings, movies, params, name, baselines=baselines.get(name, {}), phase=phase,
                          original_users=original_users) for name in protocols}
    return {"created_at": datetime.now(UTC).isoformat(timespec="seconds"), "protocols": out,
            "seconds": round(time.perf_counter() - started, 1)}
