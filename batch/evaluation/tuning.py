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
from itertools import product
from pathlib import Path

import numpy as np

from batch.evaluation.fallback import choose_fallback
from batch.evaluation.protocol import PROTOCOLS, Phase
from batch.evaluation.rows import GRIDS, SMALL_GRIDS, TUNED_ROWS, original
from batch.evaluation.scoring import Scores, paired_difference, score
from batch.movielens import Movies, Ratings
from batch.params import Params, tuned_document

log = logging.getLogger(__name__)

OBJECTIVE = "validation precision@10 (ties: NDCG@10); test never read"


@dataclass(frozen=True)
class Stage:
    """One stage of the default's search over ``values`` (setting -> values tried).

    ``grid``: every combination, the best kept; ``greedy``: one setting at a time, each value tried
    alone, the best kept before the next setting; ``ascent``: coordinate ascent, rounds of
    ``greedy`` until nothing changes (at most ``rounds``).  Each stage starts from the best so far.
    """

    name: str
    kind: str
    values: dict
    rounds: int = 4

    def configurations(self) -> int:
        sizes = [len(v) for v in self.values.values()]
        return int(np.prod(sizes)) if self.kind == "grid" else sum(sizes)


BLEND = {"ranker": "blend", "blend_form": "z", "blend_ease": 1.0, "blend_pop": 0.0}
STAGES = (
    Stage("blend", "grid", {"blend_als": (0.0, 0.5, 1.0, 1.5), "blend_svd": (0.0, 0.1, 0.2, 0.4)}),
    Stage("pool", "grid", {"candidates": (100, 200, 400), "ease_candidates": (0, 100)}),
    Stage("terms", "greedy", {"blend_fresh": (0.0, 0.1, 0.2, 0.4), "blend_year": (0.0, 0.1, 0.2, 0.4),
                              "blend_pop": (0.0, 0.1, 0.2, 0.4)}),
    Stage("edges", "ascent", {"blend_als": (1.0, 1.5, 2.0, 3.0), "blend_svd": (0.2, 0.4, 0.6, 0.8),
                              "blend_fresh": (0.2, 0.4, 0.6, 0.8), "blend_year": (0.0, 0.1, 0.2, 0.3)}),
)


def _stages() -> tuple[Stage, ...]:
    return STAGES


@dataclass(frozen=True)
class SearchSpace:
    """What ``tune`` tries: each baseline's grid and the default's stages."""

    grids: dict = field(default_factory=lambda: dict(GRIDS))
    stages: tuple = field(default_factory=_stages)

    def small(self) -> SearchSpace:
        """A tiny space (smoke tests)."""
        stages = tuple(Stage(st.name, st.kind, {k: v[:2] for k, v in list(st.values.items())[:2]}, 1)
                       for st in self.stages)
        return SearchSpace(dict(SMALL_GRIDS), stages)


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


def tune_default(ph: Phase, start: Params, stages: tuple[Stage, ...],
                 bar: dict[str, float]) -> tuple[Params, Scores, list[dict]]:
    """Search the default pipeline stage by stage on ``ph``; return (params, scores, trials).

    The objective is ``min(P@10 / bar P@10, NDCG@10 / bar NDCG@10)``, ``bar`` being the best tuned
    baselines' validation values: the default must lead in both (ties: P@10, then NDCG@10).
    """
    warm = ph.fold.users()
    truth = ph.fold.truth(warm)
    trials: list[dict] = []

    def objective(result: Scores) -> tuple[float, float, float]:
        p, n = result.key()
        return min(p / bar["precision@10"], n / bar["ndcg@10"]), p, n

    def trial(stage: str, params: Params, changes: dict) -> tuple:
        result = score(ph.cache.lists("pipeline", params, warm, 10), truth)
        value = objective(result)
        trials.append({"stage": f"default {stage}", **changes, **result.at_10(),
                       "objective": round(value[0], 5)})
        return value, result

    best = start.with_(**BLEND)
    best_value, best_scores = trial("start", best, BLEND)
    for stage in stages:
        if stage.kind == "grid":  # the best of the grid, whether or not it beats the stage's start
            names, found = list(stage.values), None
            for combo in product(*stage.values.values()):
                changes = dict(zip(names, combo, strict=True))
                value, result = trial(stage.name, best.with_(**changes), changes)
                if found is None or value > found[0]:
                    found = (value, result, best.with_(**changes))
            best_value, best_scores, best = found
        for _ in range(0 if stage.kind == "grid" else stage.rounds if stage.kind == "ascent" else 1):
            moved = False
            for name, values in stage.values.items():
                for v in values:
                    if getattr(best, name) == v:
                        continue
                    value, result = trial(stage.name, best.with_(**{name: v}), {name: v})
                    if value > best_value:
                        best, best_value, best_scores, moved = best.with_(**{name: v}), value, result, True
            if not moved:
                break
        log.info("default after %s: %s (objective %.4f)", stage.name, best_scores.at_10(), best_value[0])
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
            bar = {m: max(b["validation"][m] for b in baselines.values())
                   for m in ("precision@10", "ndcg@10")}
            params, result, default_trials = tune_default(ph, start, space.stages, bar)
            trials += default_trials
            sections["params"] = params
            best = max(baselines, key=lambda k: (baselines[k]["validation"]["precision@10"],
                                                 baselines[k]["validation"]["ndcg@10"]))
            bl = original(base).with_(**baselines[best]["settings"])
            paired = paired_difference(result, score(ph.cache.lists(baselines[best]["model"], bl,
                                                                    ph.fold.users(), 10), ph.fold.truth()))
            sections["validation"][protocol] = {"default": result.at_10(), "bar": bar, "best_baseline": best,
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
    if previous.get("version") != 2:  # an older layout: nothing to keep but its parameters (the base)
        previous = {}

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
                         "default": [{"stage": st.name, "kind": st.kind, **{k: list(v) for k, v in
                                                                            st.values.items()}}
                                     for st in space.stages]},
        "trials": merged("trials"),
    }


def tune_file(ratings: Ratings, movies: Movies, output: Path, protocols: tuple[str, ...] = PROTOCOLS, *,
              quick: bool = False, seed: int = 42, provenance: dict | None = None) -> list[str]:
    """Tune (from ``output``'s parameters, if it exists), write the tuned file to ``output``; return
    the summary: each choice with its validation score, the defaults it changed, the trials."""
    started = time.perf_counter()
    previous = tuned_document(output) if output.exists() else {}
    base = Params.from_dict(previous["params"]) if "params" in previous else Params()
    space = SMALL if quick else SearchSpace()
    sections = tune(ratings, movies, base, space, protocols, seed)
    doc = assemble(previous, sections, provenance or {}, space, seed)
    path = write_tuned(doc, output)
    lines = [f"{protocol} {key}: {json.dumps(chosen['settings'])}, validation {chosen['validation']}"
             for protocol, section in sections["baselines"].items() for key, chosen in section.items()]
    lines += [f"{protocol} validation: {json.dumps(value)}" for protocol, value in
              sections["validation"].items()]
    defaults = Params().to_dict()
    changed = {k: v for k, v in doc["params"].items() if defaults[k] != v}
    trials = sum(map(len, sections["trials"].values()))
    return [*lines, f"default pipeline (changes from the built-in defaults): {json.dumps(changed)}",
            f"{trials} trials in {time.perf_counter() - started:.0f}s; written to {path}"]


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
