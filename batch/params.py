"""Pipeline parameters, each declared once: name, type, default, help, range and group.

Everything else is derived from these declarations: ``recsys-batch run``'s options
(:func:`batch.cli.options.param_options`), the keyword arguments of the training calls
(:meth:`Params.kwargs`) and the evaluation cache keys (:func:`group_names`).  Adding a setting
is one :func:`setting` line here; ``tests/test_params.py`` fails if any consumer misses it.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import Field, asdict, dataclass, field, fields, replace
from pathlib import Path

from lookup_api.contract.errors import RecsysError

TUNED_PATH = Path(__file__).with_name("tuned_params.json")
RANKERS = ("svd", "blend")
BLEND_FORMS = ("linear", "product", "z")
WEIGHTINGS = ("raw", "binary", "liked", "likes", "graded", "bm25")
KNN_KINDS = ("cosine", "bm25")
POPULARITY_RULES = ("mean", "damped", "count", "liked")
# Groups whose settings are the keyword-only arguments of one model's ``fit`` (prefix stripped):
# "als" -> batch.models.als.fit, "svd" -> batch.models.svd.fit, ... (see batch.models.SOURCES).
# A model declares no default of its own: every value comes from here.
TRAINED = ("als", "svd", "popularity", "ease", "knn", "content")
SIGNAL_HELP = ("raw rating, binary, liked (1 + [liked]), likes (liked ratings only), graded (liked 1, "
               "a 3 0.3, lower 0.1) or bm25")


class ParamError(RecsysError, ValueError):
    """A parameter value or parameter file is invalid."""


def setting(default, help: str, *, group: str | tuple[str, ...], min: float | None = None,
            max: float | None = None, min_open: bool = False, choices: tuple[str, ...] | None = None):
    """Declare one parameter: its default, one-line help, group(s) and valid range or choices."""
    groups = (group,) if isinstance(group, str) else tuple(group)
    return field(default=default, metadata={"help": help, "groups": groups, "min": min, "max": max,
                                            "min_open": min_open, "choices": choices})


@dataclass(frozen=True)
class Params:
    """Every knob of the two-stage pipeline (defaults: the original project's values)."""

    als_factors: int = setting(32, "ALS latent factors.", group="als", min=1, max=1024)
    als_regularization: float = setting(0.05, "ALS L2 regularization.", group="als", min=0)
    als_iterations: int = setting(20, "ALS alternating iterations.", group="als", min=1, max=500)
    als_alpha: float = setting(1.0, "ALS confidence scale (confidence = weight x alpha).", group="als",
                               min=0, min_open=True)
    als_weighting: str = setting("raw", f"ALS confidence from ratings: {SIGNAL_HELP}.", group="als",
                                 choices=WEIGHTINGS)
    als_recency_days: float = setting(0.0, "Half-life in days of an ALS interaction's weight, counted back "
                                      "from the user's newest rating (0: no decay).", group="als", min=0)
    svd_factors: int = setting(50, "SVD latent factors.", group="svd", min=1, max=1024)
    svd_lr: float = setting(0.005, "SVD SGD learning rate.", group="svd", min=0, min_open=True)
    svd_reg: float = setting(0.02, "SVD L2 regularization.", group="svd", min=0)
    svd_epochs: int = setting(20, "SVD SGD epochs.", group="svd", min=1, max=500)
    ease_l2: float = setting(500.0, "EASE L2 weight (lambda).", group="ease", min=0, min_open=True)
    ease_weighting: str = setting("binary", f"EASE input signal: {SIGNAL_HELP}.", group="ease",
                                  choices=WEIGHTINGS)
    ease_items: int = setting(6000, "EASE's item set: the most liked movies only (0: every movie); the "
                              "item x item inverse is dense, so this bounds its memory and time (ML-1M's "
                              "3,706 movies all fit; ML-25M's 55k do not).",
                              group="ease", min=0, max=100_000)
    ease_recency_days: float = setting(0.0, "Half-life in days of an EASE interaction's weight, counted "
                                       "back from the user's newest rating (0: no decay).", group="ease",
                                       min=0)
    knn_kind: str = setting("cosine", "Item-kNN similarity (implicit): cosine or bm25.", group="knn",
                            choices=KNN_KINDS)
    knn_neighbours: int = setting(50, "Item-kNN neighbours kept per item.", group="knn", min=1, max=5000)
    knn_weighting: str = setting("binary", f"Item-kNN input signal: {SIGNAL_HELP}.", group="knn",
                                 choices=WEIGHTINGS)
    candidates: int = setting(100, "ALS candidates per user.", group="candidates", min=1, max=5000)
    content_candidates: int = setting(30, "TF-IDF genre candidates per user (0: none).",
                                      group="candidates", min=0, max=5000)
    ease_candidates: int = setting(0, "EASE candidates per user (0: none; EASE is then not fitted unless "
                                   "the blend uses it).", group="candidates", min=0, max=5000)
    like_threshold: float = setting(4.0, "Rating from which a movie counts as liked (content candidates, "
                                    "the likes signals, the liked popularity rule).",
                                    group=("candidates", "popularity", "als", "ease", "knn", "content"),
                                    min=0)
    ranker: str = setting("svd", "svd: SVD predicted rating (original design); blend: the blend below.",
                          group="ranking", choices=RANKERS)
    blend_svd: float = setting(1.0, "Blend weight of the SVD term.", group="ranking")
    blend_als: float = setting(0.0, "Blend weight of the ALS score term.", group="ranking")
    blend_ease: float = setting(0.0, "Blend weight of the EASE score term (0: not used).", group="ranking")
    blend_pop: float = setting(0.0, "Blend weight of log(1 + rating count) (z form: log(1 + the popular "
                               "list's score)).", group="ranking")
    blend_fresh: float = setting(0.0, "Blend weight of the movie's freshness, -log(1 + days since its "
                                 "first rating).", group="ranking")
    blend_year: float = setting(0.0, "Blend weight of the movie's release year (from its title).",
                                group="ranking")
    blend_form: str = setting("linear", "linear: weighted sum of the raw terms; product: sum of logs; "
                              "z: weighted sum of each term standardised over the user's candidates.",
                              group="ranking", choices=BLEND_FORMS)
    blend_center: float = setting(3.5, "Product blend: rating mapped to probability 0.5.", group="ranking")
    blend_scale: float = setting(1.0, "Product blend: rating scale of the sigmoid.", group="ranking",
                                 min=0, min_open=True)
    top_n: int = setting(50, "List length per user.", group="ranking", min=1, max=1000)
    popularity_rule: str = setting("mean", "Popular list (unknown users): mean rating among movies with "
                                   ">= min-count ratings, damped mean, count of ratings, or count of "
                                   "ratings >= like-threshold (liked).", group="popularity",
                                   choices=POPULARITY_RULES)
    popularity_min_count: int = setting(100, "Ratings a movie needs for the mean popularity rule.",
                                        group="popularity", min=1)
    popularity_damping: float = setting(100.0, "Ratings' weight of the global mean in the damped rule.",
                                        group="popularity", min=0)
    popularity_recency_days: float = setting(0.0, "Half-life in days of a rating's weight in the popular "
                                             "list, counted back from the newest rating (0: no decay).",
                                             group="popularity", min=0)
    popularity_window_days: float = setting(0.0, "Count only the ratings of the last this many days "
                                            "before the newest rating in the popular list (0: all).",
                                            group="popularity", min=0)
    seed: int = setting(42, "Random seed of ALS and SVD.", group=("als", "svd"))

    def needs_ease(self) -> bool:
        """True when the pipeline uses EASE (as a candidate source or a blend term)."""
        return self.ease_candidates > 0 or (self.ranker == "blend" and self.blend_ease != 0)

    def __post_init__(self) -> None:
        for f in fields(self):
            if problem := check(f, getattr(self, f.name)):
                raise ParamError(f"{f.name} {problem}")

    def with_(self, **changes) -> Params:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def kwargs(self, group: str) -> dict:
        """Return ``group``'s settings as the training call's keyword arguments (prefix stripped)."""
        return {f.name.removeprefix(f"{group}_"): getattr(self, f.name) for f in declared(group)}

    def to_dict(self) -> dict:
        """Return the parameters as a plain dict (the tuned file's ``params``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Params:
        """Build from a dict, rejecting unknown keys (a typo must not pass silently)."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ParamError(f"unknown parameter(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ParamError(str(exc)) from None


def declared(group: str | None = None) -> list[Field]:
    """Return the declared settings (of ``group`` only, when given), in declaration order."""
    return [f for f in fields(Params) if group is None or group in f.metadata["groups"]]


def group_names(group: str) -> tuple[str, ...]:
    """Return the names of ``group``'s settings (e.g. a model cache key)."""
    return tuple(f.name for f in declared(group))


def check(f: Field, value) -> str | None:
    """Return why ``value`` is invalid for setting ``f`` (None when valid)."""
    meta = f.metadata
    if meta["choices"] is not None:
        ok = value in meta["choices"]
        return None if ok else f"must be one of {', '.join(meta['choices'])}, got {value!r}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"must be a number, got {value!r}"
    if f.type == "int" and not isinstance(value, numbers.Integral):
        return f"must be an integer, got {value!r}"
    low, high = meta["min"], meta["max"]
    if low is not None and (value <= low if meta["min_open"] else value < low):
        return f"must be {'above' if meta['min_open'] else 'at least'} {low}, got {value!r}"
    if high is not None and value > high:
        return f"must be at most {high}, got {value!r}"
    return None


def tuned_document(path: Path | str | None = None) -> dict:
    """Return the whole tuned file (params + provenance); ``{}`` when the default file is absent."""
    if path is None and not TUNED_PATH.exists():
        return {}
    path = Path(path or TUNED_PATH)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ParamError(f"{path}: cannot read parameters: {exc}") from None
    if not isinstance(doc, dict):
        raise ParamError(f"{path}: expected a JSON object")
    return doc


def load_params(path: Path | str | None = None) -> Params:
    """Load the tuned parameter file (``batch/tuned_params.json``), or defaults if absent."""
    doc = tuned_document(path)
    return Params.from_dict(doc.get("params", doc))


# ---- Issue 21: stored spare items and "more like this" lists -------------------------------------------
# Not Params fields (no CLI option, no tuning): fixed settings chosen on the temporal validation phase by
# batch/evaluation/similar.py (see docs/evaluation.md) and read by batch/job.py.
SPARE_ITEMS = 50  # stored lists hold top_n + SPARE_ITEMS items: hidden titles and ?exclude= still fill n
SIMILAR_N = 20  # "more like this" items served per movie (the stored list holds SIMILAR_N + SPARE_ITEMS)
# co-occurrence of likes, shrunk hard (ML-1M temporal validation NDCG@10 0.132 vs genre-only 0.064,
# popular 0.126, ALS item factors 0.059, EASE-like 0.099); genres only fill the lists of rarely liked movies
SIMILAR_WEIGHTS = {"likes": 1.0, "factors": 0.0, "genres": 0.001}  # blend of batch/related.py's signals
SIMILAR_SHRINK = 1000.0  # co-occurrence shrinkage: c_ij / (sqrt(n_i n_j) + shrink)
