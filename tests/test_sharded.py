"""The sharded run (train -> score --shard I/N -> publish) equals a single `run`, key for key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from batch.cli import cli
from batch.sharded import parse_shard, shard_users
from batch.store import RunStore
from lookup_api.contract.items import list_ids
from lookup_api.contract.keys import Keys

SMALL = ["--top-n", "20"]
PARAMS = {"candidates": 30, "content_candidates": 10, "als_factors": 8, "svd_factors": 8,
          "popularity_min_count": 5, "ranker": "svd"}


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def params_file(tmp_path):
    path = tmp_path / "params.json"
    path.write_text(json.dumps({"params": PARAMS}))
    return str(path)


def lists(client, keys: Keys, run_id: str) -> dict[bytes, bytes]:
    base = keys.run_base(run_id)
    names = sorted(k for k in client.scan_iter(match=f"{base}:user:*"))
    return {k[len(base):]: v for k, v in zip(names, client.mget(names), strict=True)}


def run_keys(client, keys: Keys, run_id: str) -> dict[bytes, bytes]:
    """Every string key of a run (its lists), by its name after the run's base, with its value."""
    base = keys.run_base(run_id)
    names = sorted(client.scan_iter(match=f"{base}:*", _type="string"))
    return {k[len(base):]: v for k, v in zip(names, client.mget(names), strict=True)}


def test_three_shards_equal_one_run(small_dir, tmp_path, redis_url, prefix, client, params_file):
    single = Keys(prefix + "-single")
    base = ["--redis-url", redis_url, "--data-dir", str(small_dir)]
    try:
        assert invoke(*base, "--prefix", single.prefix, "run", "--params", params_file, *SMALL).exit_code == 0
        art = str(tmp_path / "artifacts")
        sharded = [*base, "--prefix", prefix]
        trained = invoke(*sharded, "train", "--artifacts", art, "--params", params_file, *SMALL)
        assert trained.exit_code == 0, trained.output
        store = RunStore(client, Keys(prefix))
        run_id = json.loads((tmp_path / "artifacts" / "manifest.json").read_text())["run_id"]

        assert invoke(*sharded, "score", "--artifacts", art, "--shard", "0/3").exit_code == 0
        early = invoke(*sharded, "publish", "--artifacts", art, "--shards", "3")
        assert early.exit_code == 1 and "shard(s) [1, 2] of 3 have not finished" in early.output
        assert store.current() is None  # nothing flips before every shard is done
        out = invoke(*sharded, "score", "--artifacts", art, "--shard", "2/3")
        assert out.exit_code == 0 and "user lists written" in out.output
        # as a Kubernetes Indexed Job pod: the index comes from JOB_COMPLETION_INDEX
        out = CliRunner().invoke(cli, [*sharded, "score", "--artifacts", art, "--shard", "index/3"],
                                 env={"JOB_COMPLETION_INDEX": "1"}, catch_exceptions=False)
        assert out.exit_code == 0 and "shard 1/3" in out.output
        done = invoke(*sharded, "publish", "--artifacts", art, "--shards", "3")
        assert done.exit_code == 0, done.output
        assert store.current() == run_id and client.get(Keys(prefix).lock) is None

        expected = lists(client, single, RunStore(client, single).current())
        got = lists(client, Keys(prefix), run_id)
        assert len(got) == 300 and got == expected  # byte for byte
        # every other key of the run too: popular, catalog, per-genre and "more like this" lists
        single_run = RunStore(client, single).current()
        others = {name: {k: v for k, v in run_keys(client, keys, rid).items() if b":user:" not in k}
                  for name, keys, rid in (("single", single, single_run), ("sharded", Keys(prefix), run_id))}
        assert {k for k in others["single"] if b":similar:" in k} and {k for k in others["single"] if
                                                                        b":popular:" in k}
        assert others["sharded"] == others["single"]
        meta, single_meta = store.meta(run_id), RunStore(client, single).meta(single_run)
        assert meta.shards == 3 and meta.genres == single_meta.genres and meta.genres
        assert (meta.similar_movies, meta.stored_n) == (single_meta.similar_movies, single_meta.stored_n)
    finally:
        for key in client.scan_iter(match=f"{single.prefix}:*"):
            client.unlink(key)


def test_sharded_run_leaves_out_the_titles_hidden_when_it_trained(small_dir, tmp_path, redis_url, prefix,
                                                                  client, params_file):
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    store, keys, art = RunStore(client, Keys(prefix)), Keys(prefix), str(tmp_path / "a")
    assert invoke(*base, "run", "--params", params_file, *SMALL).exit_code == 0
    before = store.current()
    movie = store.popular(before)[0]["movie_id"]
    invoke(*base, "hide", str(movie))
    assert invoke(*base, "train", "--artifacts", art, "--params", params_file, *SMALL).exit_code == 0
    invoke(*base, "unhide", str(movie))  # after train: the run still leaves it out, as it was trained
    assert invoke(*base, "score", "--artifacts", art, "--shard", "0/1").exit_code == 0
    assert invoke(*base, "publish", "--artifacts", art, "--shards", "1").exit_code == 0
    run_id = store.current()
    assert run_id != before and store.meta(run_id).hidden_at_publish == 1
    stored = {k: v for k, v in run_keys(client, keys, run_id).items() if not k.endswith(b":catalog")}
    assert all(movie not in list_ids(v) for k, v in stored.items() if k.startswith(b":user:") or
               k.startswith(b":popular") or k.startswith(b":similar:")), movie
    assert f":similar:{movie}".encode() not in stored  # no "more like this" page for it either
    assert any(movie in list_ids(v) for k, v in run_keys(client, keys, before).items()
               if k.startswith(b":user:"))  # it was there before it was hidden


def test_sharded_run_holds_the_lock_until_publish(small_dir, tmp_path, redis_url, prefix, params_file):
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    art = str(tmp_path / "a")
    assert invoke(*base, "train", "--artifacts", art, "--params", params_file).exit_code == 0
    refused = invoke(*base, "run", "--params", params_file)
    assert refused.exit_code == 1 and "holds the lock" in refused.output


def test_shard_parsing_and_slices():
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "a/b", "3"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    slices = [shard_users(10, i, 3) for i in range(3)]
    assert np.concatenate(slices).tolist() == list(range(10)) and [len(s) for s in slices] == [4, 3, 3]
    assert invoke("score", "--artifacts", "x", "--shard", "9/3").exit_code == 2


def test_missing_artifacts_is_a_clean_error(tmp_path, redis_url, prefix):
    result = invoke("--redis-url", redis_url, "--prefix", prefix, "score", "--artifacts",
                    str(tmp_path / "none"), "--shard", "0/1")
    assert result.exit_code == 1 and "no artifacts here" in result.output


def test_each_step_renews_the_lease_and_score_refuses_once_it_is_lost(small_dir, tmp_path, redis_url, prefix,
                                                                       client, params_file):
    base = ["--redis-url", redis_url, "--prefix", prefix, "--data-dir", str(small_dir)]
    art, keys = str(tmp_path / "a"), Keys(prefix)
    trained = invoke(*base, "train", "--artifacts", art, "--params", params_file, "--lock-ttl", "120")
    assert trained.exit_code == 0, trained.output
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert client.get(keys.lock).decode() == manifest["lock_token"]
    client.pexpire(keys.lock, 5000)  # the lease is about to run out...
    assert invoke(*base, "score", "--artifacts", art, "--shard", "0/2").exit_code == 0
    assert client.pttl(keys.lock) > 100_000  # ...and score renewed it for --lock-ttl

    client.delete(keys.lock)  # the lease expired; another run takes the lock
    client.set(keys.lock, "another-run", ex=60)
    refused = invoke(*base, "score", "--artifacts", art, "--shard", "1/2")
    assert refused.exit_code == 1 and "no longer held" in refused.output
    run_id = manifest["run_id"]
    assert len(lists(client, keys, run_id)) == 150  # shard 1 wrote nothing
    assert RunStore(client, keys).shards_done(run_id) == {0: 150}
    late = invoke(*base, "publish", "--artifacts", art, "--shards", "2")
    assert late.exit_code == 1 and RunStore(client, keys).current() is None
    assert client.get(keys.lock) == b"another-run"  # a step that lost its lease never releases another's
