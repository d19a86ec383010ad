"""Settings are declared once (batch/params.py); the CLI, the training calls and the cache keys follow."""

from __future__ import annotations

import inspect
from dataclasses import fields

import click
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.evaluation.protocol import ALS_KEYS, SVD_KEYS
from batch.models.als import train_als
from batch.models.popularity import popularity_scores
from batch.models.svd import train_svd
from batch.params import TRAINED, ParamError, Params, declared

GROUPS = {"als", "svd", "candidates", "ranking", "popularity"}
# The call each trained group's settings are passed to, and its data arguments (not settings).
CALLS = {"als": (train_als, {"ratings", "threads", "widen"}),
         "svd": (train_svd, {"ratings", "user_ids", "item_ids"}),
         "popularity": (popularity_scores, {"ratings", "times"})}


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
def test_training_calls_take_exactly_their_groups_settings(group):
    """A setting missing from a training call (or a call argument without a setting) fails here."""
    call, data_args = CALLS[group]
    accepted = set(inspect.signature(call).parameters) - data_args
    assert set(Params().kwargs(group)) == accepted


def test_cache_keys_cover_every_setting_the_fits_receive():
    assert set(ALS_KEYS) == {f.name for f in declared("als")} and "seed" in ALS_KEYS
    assert set(SVD_KEYS) == {f.name for f in declared("svd")} and "seed" in SVD_KEYS


def test_train_uses_the_declared_settings(small_dir):
    """The wiring for real: factors and seeds given as Params reach the fitted models."""
    from batch import pipeline
    from batch.interactions import Interactions
    from batch.movielens_ratings import load_dir

    ratings, movies = load_dir(small_dir)
    data = Interactions.from_ratings(ratings)
    models = pipeline.train(data, movies, Params(als_factors=6, svd_factors=5, svd_epochs=2, als_iterations=2,
                                                 popularity_rule="count"))
    assert models.als.user_factors.shape[1] in (6, 8)  # implicit may pad factors for SIMD
    assert models.svd.pu.shape[1] == 5
    assert (models.popularity == models.counts).all()


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
