"""Settings are declared once (batch/params.py); the CLI, the training calls and the cache keys follow."""

from __future__ import annotations

import inspect
from dataclasses import fields

import click
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.models import SOURCES
from batch.params import TRAINED, ParamError, Params

GROUPS = {"als", "svd", "candidates", "ranking", "popularity", "ease", "knn", "content"}
# Each model's data arguments and runtime arguments (not settings).
NOT_SETTINGS = {"data", "genres", "threads", "widen"}


def test_every_setting_is_fully_declared():
    for f in fields(Params):
        meta = f.metadata
        assert meta.get("help"), f"{f.name} has no help"
        assert meta["groups"] and set(meta["groups"]) <= GROUPS, f.name
        assert f.type in ("int", "float", "str"), f.name
        assert (meta["choices"] is not None) == (f.type == "str"), f.name


def test_run_has_an_option_for_every_setting_with_its_help():
    options = {p.name: p for p in cli.commands["run"].params if isinstance(p, click.Option)}
    for f in fields(Params):
        assert f.name in options, f"run lacks --{f.name.replace('_', '-')}"
        assert options[f.name].help.startswith(f.metadata["help"]), f.name


@pytest.mark.parametrize("group", TRAINED)
def test_model_fits_take_exactly_their_groups_settings(group):
    """A setting missing from a model's fit (or a fit argument without a setting) fails here."""
    import importlib

    assert set(TRAINED) == set(SOURCES)
    call = importlib.import_module(f"batch.models.{group}").fit
    accepted = set(inspect.signature(call).parameters) - NOT_SETTINGS
    assert set(Params().kwargs(group)) == accepted


def test_cache_keys_cover_every_setting_the_fits_receive():
    from batch.pipeline import model_key

    for group in TRAINED:
        changed = Params(like_threshold=3.0)
        assert (model_key(group, changed) != model_key(group, Params())) == (group != "svd"), group
    assert model_key("als", Params(seed=1)) != model_key("als", Params())
    assert model_key("svd", Params(svd_epochs=3)) != model_key("svd", Params())


def test_train_uses_the_declared_settings(small_dir):
    """The wiring for real: factors and seeds given as Params reach the fitted models."""
    from batch import pipeline
    from batch.interactions import Interactions
    from batch.movielens_ratings import load_dir

    ratings, movies = load_dir(small_dir)
    data = Interactions.from_ratings(ratings)
    params = Params(als_factors=6, svd_factors=5, svd_epochs=2, als_iterations=2, popularity_rule="count")
    models = pipeline.Models.fit(data, movies, params)
    assert models.als.user_factors.shape[1] in (6, 8)  # implicit may pad factors for SIMD
    assert models.svd.pu.shape[1] == 5
    assert (models.popularity.scores == models.counts).all()


@pytest.mark.parametrize("changes, message", [
    ({"als_factors": 0}, "als_factors must be at least 1"),
    ({"als_alpha": 0.0}, "als_alpha must be above 0"),
    ({"ranker": "best"}, "ranker must be one of svd, blend"),
    ({"top_n": 1.5}, "top_n must be an integer"),
    ({"content_candidates": -1}, "content_candidates must be at least 0"),
])
def test_invalid_values_are_refused_by_the_declaration(changes, message):
    with pytest.raises(ParamError, match=message):
        Params(**changes)


def test_cli_range_comes_from_the_declaration():
    result = CliRunner().invoke(cli, ["run", "--als-factors", "0"])
    assert result.exit_code == 2 and "1<=x<=1024" in result.output


def test_round_trip_and_unknown_keys():
    params = Params(ranker="blend", blend_als=1.0)
    assert Params.from_dict(params.to_dict()) == params
    with pytest.raises(ParamError, match="unknown parameter"):
        Params.from_dict({"als_factorz": 3})
