"""Dashboard render timings at 50k items, against the 111-item sample collection as baseline.

Measures with Streamlit's AppTest (the same script run the server does, minus the
browser): each page's first render in a fresh session, and each Similar-page
update (positive example, negative example, one-per-group, diversity, filter).
The baseline is samples/ ingested by the real Prefect flow and swept by the real
dedupe. The 50k collection is synthetic: every point is a sample item's real vector
plus noise, with that sample's payload (so thumbnails are real images), plus
near-duplicate pairs labelled as the sweep labels them, for the Duplicates page.

    python benchmarks/dashboard_render.py --n 50000 --home var/bench_dashboard

Prints a JSON report and a markdown table (docs/benchmarks_dashboard.md records them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

APP = REPO / "dashboard" / "app.py"
SAMPLES = REPO / "samples"
PAGES = ("Browse", "Similar", "Search", "Duplicates", "Map", "Runs")


def sample_collection(settings) -> None:
    """samples/ through the real pipeline: the Prefect ingest flow, then the dedupe sweep."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.ingest import ingest_flow
    from recommender.duplicates import sweep
    from recommender.store import open_store

    with prefect_test_harness(server_startup_timeout=120):
        ingest_flow(str(SAMPLES), str(SAMPLES / "metadata.csv"), settings=settings.model_dump(mode="json"))
    store = open_store(settings)
    try:
        sweep(store, settings)
    finally:
        store.close()


def synthetic_collection(settings, n: int, template, seed: int = 0, noise: float = 0.35,
                         near_every: int = 50) -> int:
    """Fill `settings.collection` with n points: each a sample item's vector plus noise, with the
    sample's payload (same image path) and a distinct id; every `near_every`-th point is made a
    near duplicate of the one before (`near_cluster_id`, as the sweep writes it), so every page
    has real work to do at scale."""
    import numpy as np

    from recommender import payload as P
    from recommender.store import open_store, point_id_for

    rng = np.random.default_rng(seed)
    src = open_store(template)
    try:
        base = [(p, v) for _, p, v in src.scroll(with_vectors=True)]
        model, columns = src.model_name(), src.metadata_fields()
    finally:
        src.close()
    dim = len(base[0][1])
    dst = open_store(settings)
    try:
        dst.ensure_collection(model, dim, columns)
        for start in range(0, n, 1000):
            ids, vecs, payloads = [], [], []
            for i in range(start, min(n, start + 1000)):
                p, v = base[i % len(base)]
                vec = v + rng.normal(0, noise / np.sqrt(dim), dim).astype(np.float32)
                payload = {k: val for k, val in p.items() if k not in (*P.CLUSTER_FIELDS, P.COPIES)}
                payload["synthetic_index"] = i
                ids.append(point_id_for(f"synthetic-{seed}-{i}"))
                if near_every and i % near_every == 1 and vecs:
                    vec = vecs[-1] + rng.normal(0, 0.02 / np.sqrt(dim), dim).astype(np.float32)
                    payloads[-1][P.NEAR_CLUSTER_ID] = payload[P.NEAR_CLUSTER_ID] = ids[-2]
                vecs.append((vec / np.linalg.norm(vec)).astype(np.float32))
                payloads.append(payload)
            dst.upsert(ids, np.stack(vecs), payloads)
        return dst.count()
    finally:
        dst.close()


def build(home: Path, n: int) -> tuple[Any, Any]:
    """The sample collection (real ingest and dedupe) and the synthetic n-point one; reused when present."""
    from recommender.settings import get_settings
    from recommender.store import open_store

    base = get_settings(home=home / "samples", collection="samples")
    if not (base.home / "READY").exists():
        sample_collection(base)
        (base.home / "READY").write_text("ok")
    big = get_settings(home=home / "big", collection=f"synthetic{n}")
    store = open_store(big)
    count = store.count()
    store.close()
    if count != n:
        t = time.perf_counter()
        synthetic_collection(big, n, base)
        print(f"built {n} synthetic points in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        shutil.copy(base.catalog_path, big.catalog_path)  # run history for the Runs page
    return base, big


def timed(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _check(at) -> None:
    if at.exception:
        raise RuntimeError(f"page raised: {at.exception[0].value}")


def measure(cfg, seed_id: str, sessions: int) -> dict[str, Any]:
    """Timings for one collection; first-ever renders (cold caches) are reported apart from warm ones."""
    from streamlit.testing.v1 import AppTest

    os.environ["RECOMMENDER_HOME"] = str(cfg.home)
    os.environ["RECOMMENDER_COLLECTION"] = cfg.collection
    out: dict[str, Any] = {"collection": cfg.collection}

    def fresh(page: str):
        at = AppTest.from_file(str(APP), default_timeout=600)
        at.query_params["page"] = page
        if page == "Similar":
            at.query_params["item"] = seed_id
        return at

    first: dict[str, float] = {}
    warm: dict[str, list[float]] = {p: [] for p in PAGES}
    for page in PAGES:  # first session per page: opens the store / builds caches on the way
        at = fresh(page)
        first[page] = timed(at.run)
        _check(at)
    for _ in range(sessions):
        for page in PAGES:
            at = fresh(page)
            warm[page].append(timed(at.run))
            _check(at)
    out["first_render_cold_s"] = {p: round(v, 3) for p, v in first.items()}
    out["first_render_s_median"] = {p: round(statistics.median(v), 3) for p, v in warm.items()}
    out["first_render_s_max"] = {p: round(max(v), 3) for p, v in warm.items()}

    # Similar-page updates (a fresh session each round; the seed's results already cached nowhere)
    updates: dict[str, list[float]] = {}
    for _ in range(sessions):
        at = fresh("Similar")
        at.run()
        _check(at)
        likes = [b.key for b in at.button if b.key and b.key.startswith("sim-like-")]
        steps = [
            ("positive example", lambda: at.button(key=likes[2]).click().run()),
            ("negative example", lambda: at.button(key=[b.key for b in at.button if b.key and b.key.startswith(
                "sim-dislike-")][0]).click().run()),
            ("one per group", lambda: at.selectbox(key="sim_group").set_value("genre").run()),
            ("diversity 0.5", lambda: at.slider(key="sim_div").set_value(0.5).run()),
            ("filter collection=art", lambda: at.selectbox(key="sim_f_collection").set_value("art").run()),
            ("k=48", lambda: at.slider(key="sim_k").set_value(48).run()),
        ]
        for name, step in steps:
            updates.setdefault(name, []).append(timed(step))
            _check(at)
        results = next(m.value for m in at.markdown if " results**" in m.value)
        out["last_similar_header"] = results
    out["similar_update_s_median"] = {k: round(statistics.median(v), 3) for k, v in updates.items()}
    out["similar_update_s_max"] = {k: round(max(v), 3) for k, v in updates.items()}

    # Browse interactions
    at = fresh("Browse")
    at.run()
    out["browse_next_page_s"] = round(timed(lambda: at.button(key="browse_next").click().run()), 3)
    out["browse_filter_s"] = round(timed(lambda: at.selectbox(key="browse_f_genre").set_value("Landscape").run()), 3)
    out["browse_header"] = next(m.value for m in at.markdown if "items match" in m.value)
    return out


def seed_of(cfg) -> str:
    from recommender.store import open_store

    store = open_store(cfg)
    try:
        rows, _ = store.scroll_where(must={"collection": "art"}, limit=1)
        return rows[0][0]
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--home", type=Path, default=REPO / "var" / "bench_dashboard")
    ap.add_argument("--sessions", type=int, default=3, help="fresh sessions per page for the medians")
    args = ap.parse_args()
    base, big = build(args.home, args.n)
    seeds = {"baseline": seed_of(base), "big": seed_of(big)}  # before the app holds the store lock
    t = time.perf_counter()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "n": args.n,
        "baseline": measure(base, seeds["baseline"], args.sessions),
    }
    report["big"] = measure(big, seeds["big"], args.sessions)
    report["wall_s"] = round(time.perf_counter() - t, 1)
    print(json.dumps(report, indent=2))
    b, g = report["baseline"], report["big"]
    print("\n| page / action | sample (111) median s | 50k median s | 50k max s | 50k cold first s |")
    print("|---|---|---|---|---|")
    for p in PAGES:
        print(f"| {p} first render | {b['first_render_s_median'][p]} | {g['first_render_s_median'][p]} | "
              f"{g['first_render_s_max'][p]} | {g['first_render_cold_s'][p]} |")
    for k in g["similar_update_s_median"]:
        print(f"| Similar: {k} | {b['similar_update_s_median'][k]} | {g['similar_update_s_median'][k]} | "
              f"{g['similar_update_s_max'][k]} | |")


if __name__ == "__main__":
    main()
