"""The same ingest flow on a Dask cluster: embed tasks in 2 worker processes, the writer in the flow's
process, and a collection identical to the default (thread) run's."""

from __future__ import annotations

import pytest

from flows.ingest import ingest_flow, run_ingest_flow, task_runner_for
from recommender.ingest import embed
from recommender.settings import get_settings
from test_ingest_stages import assert_same_collection, collection_snapshot, counts, planted_corpus

pytestmark = pytest.mark.slow


def test_flow_on_a_local_dask_cluster_builds_the_default_runs_collection(tmp_path):
    corpus = planted_corpus(tmp_path / "src")
    common = dict(device="cpu", chunk_items=8, chunks_ahead=2, decode_workers=1, model_streams=1)
    default = get_settings(home=tmp_path / "threads", **common)
    on_dask = get_settings(home=tmp_path / "dask", dask_address="local:2", **common)
    expected = ingest_flow(str(corpus.root), str(corpus.metadata), settings=default.model_dump(mode="json"))
    runner = task_runner_for(on_dask.dask_address)
    assert type(runner).__name__ == "DaskTaskRunner"
    assert runner.cluster_kwargs == {"n_workers": 2, "processes": True, "threads_per_worker": 1}
    embed._EMBEDDERS.clear()  # the default run loaded the model here
    got = run_ingest_flow(str(corpus.root), str(corpus.metadata), settings=on_dask.model_dump(mode="json"))
    assert not embed._EMBEDDERS  # this run's model loaded in the Dask workers only
    assert counts(got) == counts(expected) and got["new"] > 50
    assert {"load_model", "decode", "embed"} <= got["stage_seconds"].keys()  # measured on the workers, sent back
    assert_same_collection(collection_snapshot(on_dask), collection_snapshot(default))
