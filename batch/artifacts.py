"""Model artifacts between the sharded stages, in a documented pickle-free format.

A directory holding:

* ``manifest.json`` — run id, parameters, dataset identity, counts, timings, the lease (lock
  token and TTL);
* ``arrays.npz`` — numpy arrays (loaded with ``allow_pickle=False``):
  ``user_ids`` (n_users,), ``item_ids`` (n_items,); the rating matrix as CSR
  ``ratings_data/indices/indptr/shape``; ALS ``als_user`` (n_users, f), ``als_item``
  (n_items, f); TF-IDF ``content_data/indices/indptr/shape`` (n_items, n_genres) and
  ``content_prior`` (n_items,); SVD ``svd_mu`` (), ``svd_bu``, ``svd_bi``, ``svd_pu``,
  ``svd_qi``, ``svd_scale`` (2,); ``counts`` and ``popularity`` (n_items,);
* ``catalogue.json`` — per item, the head of its stored list entry (movie id, title, genres;
  :func:`lookup_api.contract.items.item_head`).

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from batch.interactions import Interactions
from batch.params import Params
from lookup_api.contract.errors import RecsysError

FORMAT_VERSION = 2


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


def save(directory: Path | str, data: Interactions, models, heads: list[str],
         manifest: dict) -> Path:
    """Write the artifacts of one trained run into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "user_ids": data.user_ids, "item_ids": data.item_ids, **_csr("ratings", data.matrix),
        "als_user": models.als.user_factors, "als_item": models.als.item_factors,
        **_csr("content", models.content.vectors), "content_prior": models.content.prior,
        "svd_mu": np.asarray(models.svd.mu), "svd_bu": models.svd.bu, "svd_bi": models.svd.bi,
        "svd_pu": models.svd.pu, "svd_qi": models.svd.qi, "svd_scale": np.asarray(models.svd.rating_scale),
        "counts": models.counts, "popularity": models.popularity,
    }
    _atomic_write(directory / "arrays.npz", lambda fh: np.savez(fh, **arrays))
    _atomic_write(directory / "catalogue.json", lambda fh: fh.write(json.dumps(heads).encode()))
    manifest = {**manifest, "format_version": FORMAT_VERSION}
    _atomic_write(directory / "manifest.json", lambda fh: fh.write(json.dumps(manifest, indent=2).encode()))
    return directory


def load(directory: Path | str):
    """Read artifacts written by :func:`save`: (data, models, heads, manifest, params)."""
    from batch.models.als import ALSModel
    from batch.models.content import ContentModel
    from batch.models.svd import SVDModel
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
        models = Models(
            als=ALSModel(a["als_user"], a["als_item"]),
            content=ContentModel(_from_csr(a, "content"), a["content_prior"]),
            svd=SVDModel(float(a["svd_mu"]), a["svd_bu"], a["svd_bi"], a["svd_pu"], a["svd_qi"],
                         tuple(map(float, a["svd_scale"]))),
            counts=a["counts"],
            popularity=a["popularity"],
        )
    heads = json.loads((directory / "catalogue.json").read_text())
    return data, models, heads, manifest, Params.from_dict(manifest["params"])
