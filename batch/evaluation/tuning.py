"""``tune``: every choice on a protocol's validation phase (fit on train, score validation; test is
never read), and the tuned file (``batch/tuned_params.json``) assembled in one place (:func:`assemble`).

Per protocol, every tuned baseline of :mod:`batch.evaluation.rows` is searched over its grid
(:data:`batch.evaluation.rows.GRIDS`).  On the temporal protocol the popular (cold-start) list is
chosen for cold users (:func:`batch.evaluation.fallback.choose_fallback`) and the default pipeline
is searched in stages (:attr:`SearchSpace.stages`), each keeping the best of its grid, starting from
the tuned ALS and EASE baselines' settings.  Every choice maximises validation P@10 (ties: NDCG@10).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from batch.evaluation.fallback import choose_fallback
from batch.evaluation.protocol import PROTOCOLS, Phase
from batch.evaluation.rows import GRIDS, SMALL_GRIDS, TUNED_ROWS, original
from batch.evaluation.scoring import paired_difference, score
from batch.movielens import Movies, Ratings
from batch.params import Params

log = logging.getLogger(__name__)

OBJECTIVE = "validation precision@10 (ties: NDCG@10); test never read"


def _stages() -> tuple[tuple[str, tuple[dict, ...]], ...]:
    """The default's search, stage by stage (each keeps its best configuration for the next)."""
    from itertools import product

    blend = tuple({"ranker": "blend", "blend_form": "z", "blend_ease": 1.0, "blend_als": a, "blend_svd": s,
                   "blend_pop": p}
                  for a, s, p in product((0.0, 0.25, 0.5, 1.0), (0.0, 0.05, 0.1, 0.2), (0.0, 0.1, 0.2, 0.4)))
    pool = tuple({"candidates": a, "content_candidates": 30, "ease_candidates": e}
                 for a, e in product((100, 200, 400), (0, 100)))
    return (("blend", blend), ("pool", pool))


@dataclass(frozen=True)
class SearchSpace:
    """What ``tune`` tries: each baseline's grid and the default's stages."""

    grids: dict = field(default_factory=lambda: dict(GRIDS))
    stages: tuple = field(default_factory=_stages)

    def small(self) -> SearchSpace:
        """A tiny space (smoke tests)."""
        return SearchSpace(dict(SMALL_GRIDS), tuple((name, grid[:2]) for name, grid in self.stages))


SMALL = SearchSpace().small()


def tune_baselines(ph: Phase, base: Params, grids: dict) -> tuple[dict, list[dict]]:
    """Search every tuned baseline's grid on ``ph`` (a validation phase); return (section, trials)."""
    warm = ph.fold.users()
    truth = ph.fold.truth(warm)
    section, trials = {}, []
    for row in TUNED_ROWS:
        best = None
        started = time.perf_counter()
        for settings in grids[row.key]:
            params = original(base).with_(**settings)
            result = score(ph.cache.lists(row.model, params, warm, 10), truth)
            ph.cache.forget(row.model, params)  # e.g. dozens of EASE inverses would not fit in memory
            trials.append({"stage": f"baseline {row.key}", **settings, **result.at_10()})
            if best is None or result.key() > best[0].key():
                best = (result, settings)
        section[row.key] = {"model": row.model, "settings": best[1], "validation": best[0].at_10(),
                            "trials": len(grids[row.key]), "seconds": round(time.perf_counter() - started, 1)}
        log.info("%s %s: %s, validation %s", ph.protocol, row.key, best[1], best[0].at_10())
    return section, trials


def tune_default(ph: Phase, base: Params, stages: tuple) -> tuple[Params, dict, list[dict]]:
    """Search the default pipeline stage by stage on ``ph``; return (params, validation, trials)."""
    warm = ph.fold.users()
    truth = ph.fold.truth(warm)
    trials = []
    best, best_scores = base, score(ph.cache.lists("pipeline", base, warm, 10), truth)
    trials.append({"stage": "default start", **best_scores.at_10()})
    for stage, grid in stages:
        for changes in grid:
            params = best.with_(**changes)
            result = score(ph.cache.lists("pipeline", params, warm, 10), truth)
            trials.append({"stage": f"default {stage}", **changes, **result.at_10()})
            if result.key() > best_scores.key():
                best, best_scores = params, result
        log.info("default after %s: %s", stage, best_scores.at_10())
    return best, best_scores, trials


def tune(ratings: Ratings, movies: Movies, base: Params | None = None, space: SearchSpace = SearchSpace(),
         protocols: tuple[str, ...] = PROTOCOLS, seed: int = 42) -> dict:
    """Run every search on the validation phase of each of ``protocols``; return the file's sections."""
    base = (base or Params()).with_(seed=seed)
    sections: dict = {"baselines": {}, "trials": {}, "validation": {}}
    for protocol in protocols:
        started = time.perf_counter()
        ph = Phase.of(ratings, movies, protocol, "validation", seed)
        baselines, trials = tune_baselines(ph, base, space.grids)
        sections["baselines"][protocol] = baselines
        if protocol == "temporal":
            fallback, fallback_trials, guard = choose_fallback(ph.fold.data, ph.cold, base)
            trials += [{"stage": "fallback", **t} for t in fallback_trials]
            sections["fallback"] = {"chosen": fallback, "recency_guard": guard}
            als, ease = (baselines[k]["settings"] for k in ("als", "ease"))
            start = base.with_(**fallback, **als, **ease)
            params, result, default_trials = tune_default(ph, start, space.stages)
            trials += default_trials
            sections["params"] = params
            best = max(baselines, key=lambda k: (baselines[k]["validation"]["precision@10"],
                                                 baselines[k]["validation"]["ndcg@10"]))
            bl = original(base).with_(**baselines[best]["settings"])
            paired = paired_difference(result, score(ph.cache.lists(baselines[best]["model"], bl,
                                                                    ph.fold.users(), 10), ph.fold.truth()))
            sections["validation"][protocol] = {"default": result.at_10(), "best_baseline": best,
                                                "default_minus_best_baseline": paired,
                                                "users": {"warm": len(ph.fold.users()), "cold": len(ph.cold)}}
        else:
            sections["validation"][protocol] = {"users": len(ph.fold.users())}
        sections["trials"][protocol] = trials
        sections["validation"][protocol]["seconds"] = round(time.perf_counter() - started, 1)
    if "params" not in sections:
        sections["params"] = base
    return sections


def assemble(previous: dict, sections: dict, provenance: dict, space: SearchSpace, seed: int) -> dict:
    """The tuned file: this run's sections over ``previous`` (a protocol not re-tuned keeps its own)."""
    def merged(name: str) -> dict:
        return {**previous.get(name, {}), **sections.get(name, {})}

    params: Params = sections["params"]
    return {
        "version": 2,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **provenance,
        "objective": OBJECTIVE,
        "protocol": {"random": "60/20/20 stratified by user, seed "
                               f"{seed}: fit on train, scored on validation",
                     "temporal": "global time split 80/10/10: fit on train (earliest 80%), scored on "
                                 "validation (next 10%), warm users for the baselines and the default, "
                                 "cold users for the fallback",
                     "scored_on": "validation", "relevance": "rating >= 4"},
        "params": params.to_dict(),
        "fallback": sections.get("fallback", previous.get("fallback", {})),
        "baselines": merged("baselines"),
        "validation": merged("validation"),
        "search_space": {"grids": {k: list(v) for k, v in space.grids.items()},
                         "stages": {name: list(grid) for name, grid in space.stages}},
        "trials": merged("trials"),
    }


def dumps(doc: dict) -> str:
    """Serialise a tuned-file document: indented, but one line per trial and per search-space entry."""
    def render(value, indent: str) -> str:
        if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
            body = ",\n".join(f"{indent} {json.dumps(v)}" for v in value)
            return f"[\n{body}\n{indent}]"
        if isinstance(value, dict) and value:
            body = ",\n".join(f"{indent} {json.dumps(k)}: {render(v, indent + ' ')}"
                               for k, v in value.items())
            return f"{{\n{body}\n{indent}}}"
        return json.dumps(value)

    return render(doc, "") + "\n"


def write_tuned(doc: dict, path: Path | str) -> Path:
    """Write the tuned-file document (atomically: a temporary file, then a rename)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(dumps(doc))
    tmp.replace(path)
    return path
