"""Pipeline parameters: defaults, the tuned file ``run`` uses, and (de)serialisation."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

TUNED_PATH = Path(__file__).with_name("tuned_params.json")
RANKERS = ("svd", "blend")
BLEND_FORMS = ("linear", "product")


class ParamError(ValueError):
    """A parameter value or parameter file is invalid."""


@dataclass(frozen=True)
class Params:
    """Every knob of the two-stage pipeline (defaults: the original project's values)."""

    # ALS candidate generator (implicit)
    als_factors: int = 32
    als_regularization: float = 0.05
    als_iterations: int = 20
    als_alpha: float = 1.0
    als_weighting: str = "raw"
    # SVD rating model (surprise)
    svd_factors: int = 50
    svd_lr: float = 0.005
    svd_reg: float = 0.02
    svd_epochs: int = 20
    # candidates and ranking
    candidates: int = 100
    content_candidates: int = 30
    like_threshold: float = 4.0
    ranker: str = "svd"
    blend_svd: float = 1.0
    blend_als: float = 0.0
    blend_pop: float = 0.0
    blend_form: str = "linear"
    blend_center: float = 3.5
    blend_scale: float = 1.0
    top_n: int = 50
    # popular list for unknown users
    popularity_rule: str = "mean"
    popularity_min_count: int = 100
    seed: int = 42
    # popular (cold-start) list, issue 12: popularity_rule is one of batch.models.popularity's
    # POPULARITY_RULES (mean | damped | count | liked); damping is the damped rule's strength;
    # recency_days > 0 halves a rating's weight every that many days before the newest rating.
    popularity_damping: float = 100.0
    popularity_recency_days: float = 0.0

    def __post_init__(self) -> None:
        if self.ranker not in RANKERS:
            raise ParamError(f"unknown ranker {self.ranker!r}; choose from {', '.join(RANKERS)}")
        for name in ("candidates", "top_n", "als_factors", "svd_factors", "als_iterations", "svd_epochs"):
            if getattr(self, name) < 1:
                raise ParamError(f"{name} must be at least 1")
        if self.blend_form not in BLEND_FORMS:
            raise ParamError(f"unknown blend_form {self.blend_form!r}; choose from {', '.join(BLEND_FORMS)}")
        if self.blend_scale <= 0:
            raise ParamError("blend_scale must be positive")
        if self.content_candidates < 0:
            raise ParamError("content_candidates must be 0 or more")

    def with_(self, **changes) -> Params:
        """Return a copy with ``changes`` applied (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        """Return the parameters as a plain dict (the tuned file's ``params``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Params:
        """Build from a dict, rejecting unknown keys (a typo must not pass silently)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ParamError(f"unknown parameter(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ParamError(str(exc)) from None


def tuned_document(path: Path | str | None = None) -> dict:
    """Return the whole tuned file (params + provenance); ``{}`` when the default file is absent."""
    if path is None:
        if not TUNED_PATH.exists():
            return {}
        path = TUNED_PATH
    path = Path(path)
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
