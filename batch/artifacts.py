"""Model artifacts between the sharded stages, in a documented pickle-free format.

A directory holding:

* ``manifest.json`` — run id, parameters, dataset identity, counts, timings, the lease (lock
  token and TTL);
* ``arrays.npz`` — numpy arrays (loaded with ``allow_pickle=False``):
  ``user_ids`` (n_users,), ``item_ids`` (n_items,); the rating matrix as CSR
  ``ratings_data/indices/indptr/shape``; ``counts`` (n_items,); and every field of every fitted
  model of the :class:`~batch.pipeline.Models` bundle as ``<model>.<field>`` (a sparse field as
  ``<model>.<field>_data/indices/indptr/shape``), e.g. ``als.user_factors`` (n_users, f),
  ``svd.qi`` (n_items, f), ``ease.weights`` (k, k); the manifest's ``models`` says which
  models and fields are there and their kinds (array, csr, float, pair);
* ``catalogue.json`` — per item, the head of its stored list entry (movie id, title, genres;
  :func:`lookup_api.contract.items.item_head`).

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.params import Params
from lookup_api.contract.errors import RecsysError

FORMAT_VERSION = 3


class ArtifactsError(RecsysError):
    """The artifacts directory is missing, incomplete or from another format version."""


def _csr(prefix: str, m: sp.csr_matrix) -> dict[str, np.ndarray]:
    return {f"{prefix}_data": m.data, f"{prefix}_indices": m.indices, f"{prefix}_indptr": m.indptr,
            f"{prefix}_shape": np.asarray(m.shape)}


def _from_csr(arrays, prefix: str) -> sp.csr_matrix:
    return sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], arrays[f"{prefix}_indptr"]),
                         shape=tuple(arrays[f"{prefix}_shape"]))


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as fh:
        write(fh)
    os.replace(tmp, path)


MODEL_CLASSES = {"als": ("batch.models.als", "ALSModel"), "content": ("batch.models.content", "ContentModel"),
                 "svd": ("batch.models.svd", "SVDModel"),
                 "popularity": ("batch.models.popularity", "PopularityModel"),
                 "ease": ("batch.models.ease", "EASEModel"),
                 "items": ("batch.models.items", "ItemFeatures")}


def _model_arrays(name: str, model) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Return (arrays, kinds) of one fitted model dataclass: every init field, by kind."""
    arrays, kinds = {}, {}
    for f in dataclasses.fields(model):
        if not f.init:
            continue
        value, key = getattr(model, f.name), f"{name}.{f.name}"
        if sp.issparse(value):
            arrays.update(_csr(key, value.tocsr()))
            kinds[f.name] = "csr"
        elif isinstance(value, np.ndarray):
            arrays[key], kinds[f.name] = value, "array"
        elif isinstance(value, tuple):
            arrays[key], kinds[f.name] = np.asarray(value, dtype=np.float64), "pair"
        elif isinstance(value, int | float | np.number):
            arrays[key], kinds[f.name] = np.asarray(value), "int" if isinstance(value, int) else "float"
        else:
            raise TypeError(f"{key}: cannot store a {type(value).__name__}")
    return arrays, kinds


def _model_from(name: str, kinds: dict[str, str], arrays):
    module, cls = MODEL_CLASSES[name]
    values = {}
    for field_name, kind in kinds.items():
        key = f"{name}.{field_name}"
        if kind == "csr":
            values[field_name] = _from_csr(arrays, key)
        elif kind == "array":
            values[field_name] = arrays[key]
        elif kind == "pair":
            values[field_name] = tuple(map(float, arrays[key]))
        else:
            values[field_name] = (int if kind == "int" else float)(arrays[key])
    return getattr(importlib.import_module(module), cls)(**values)


def save(directory: Path | str, data: Interactions, models, heads: list[str],
         manifest: dict) -> Path:
    """Write the artifacts of one trained run into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {"user_ids": data.user_ids, "item_ids": data.item_ids, **_csr("ratings", data.matrix),
              "counts": models.counts}
    stored = {}
    for name in MODEL_CLASSES:
        model = getattr(models, name)
        if model is not None:
            parts, stored[name] = _model_arrays(name, model)
            arrays.update(parts)
    _atomic_write(directory / "arrays.npz", lambda fh: np.savez(fh, **arrays))
    _atomic_write(directory / "catalogue.json", lambda fh: fh.write(json.dumps(heads).encode()))
    manifest = {**manifest, "models": stored, "format_version": FORMAT_VERSION}
    _atomic_write(directory / "manifest.json", lambda fh: fh.write(json.dumps(manifest, indent=2).encode()))
    return directory


def load(directory: Path | str):
    """Read artifacts written by :func:`save`: (data, models, heads, manifest, params)."""
    from batch.pipeline import Models

    directory = Path(directory)
    manifest_path = directory / "manifest.json"
    if not manifest_path.is_file():
        raise ArtifactsError(f"{manifest_path}: no artifacts here (run `recsys-batch train` first)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactsError(f"{manifest_path}: unreadable manifest: {exc}") from None
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactsError(f"{manifest_path}: format version {manifest.get('format_version')} is not "
                         f"{FORMAT_VERSION}; retrain with this version")
    if not (directory / "arrays.npz").is_file() or not (directory / "catalogue.json").is_file():
        raise ArtifactsError(f"{directory}: arrays.npz or catalogue.json is missing; train again")
    with np.load(directory / "arrays.npz", allow_pickle=False) as a:
        data = Interactions(a["user_ids"], a["item_ids"], _from_csr(a, "ratings"))
        fitted = {name: _model_from(name, kinds, a) for name, kinds in manifest["models"].items()}
        models = Models(**fitted, counts=a["counts"])
    heads = json.loads((directory / "catalogue.json").read_text())
    return data, models, heads, manifest, Params.from_dict(manifest["params"])
