"""Collections for the dashboard's tests, screenshots and benchmark.

`sample_collection` ingests `samples/` through the real Prefect flow and labels
duplicate clusters with the real dedup engine (the payload fields the
Duplicates page reads); `synthetic_collection` scales the sample up to tens of
thousands of points whose payload paths point at the sample images, so render
timings are measured at size without tens of thousands of files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recommender.settings import Settings
from recommender.store import open_store, point_id_for

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"


def ingest_samples(settings: Settings, source: Path = SAMPLES) -> dict[str, Any]:
    """Run the Prefect ingest flow over the sample corpus with its metadata.csv (call under a Prefect API)."""
    from flows.ingest import ingest_flow

    return ingest_flow(str(source), str(source / "metadata.csv"), settings=settings.model_dump(mode="json"))


def label_duplicates(settings: Settings, **config: Any) -> int:
    """Run the dedup engine over the stored items (their files and stored vectors) and write
    cluster_id / tier / canonical / cluster_tier / cluster_size into the payload; returns clustered items.

    `config` overrides DedupConfig fields (the sample corpus has one exact pair, which ingest already
    folds into one point, so tests lower `near_cosine` to get near-duplicate clusters to look at)."""
    from recommender.dedup import DedupConfig, DedupEngine

    store = open_store(settings)
    try:
        rows = [(pid, p, v) for pid, p, v in store.scroll(with_vectors=True) if "#" not in str(p.get("item_key", ""))]
        rows.sort(key=lambda r: (r[1].get("ingested_at", 0.0), r[1].get("path", "")))
        engine = DedupEngine(DedupConfig(workers=0).with_overrides(**config))
        items = engine.fingerprint([p["path"] for _, p, _ in rows], ids=[pid for pid, _, _ in rows],
                                   seqs=[float(k) for k in range(len(rows))])
        emb = np.stack([v for _, _, v in rows]).astype(np.float32)
        res = engine.find_duplicates(items, emb)
        for m in res.members.itertuples():
            store.set_payload([m.id], {"cluster_id": str(m.cluster_id), "tier": m.tier, "canonical": bool(m.canonical),
                                       "cluster_tier": m.cluster_tier, "cluster_size": int(m.cluster_size)})
        return len(res.members)
    finally:
        store.close()


def synthetic_collection(settings: Settings, n: int, template: Settings, seed: int = 0,
                         noise: float = 0.35, cluster_every: int = 50) -> int:
    """Fill `settings.collection` with n points: each a sample item's vector plus noise, with the
    sample's payload (same image path) and a distinct id; every `cluster_every`-th point is made a
    labelled near-duplicate of the one before, so every page has real work to do at scale."""
    rng = np.random.default_rng(seed)
    src = open_store(template)
    try:
        base = [(p, v) for _, p, v in src.scroll(with_vectors=True)]
        model = src.model_name()
    finally:
        src.close()
    dim = len(base[0][1])
    dst = open_store(settings)
    try:
        dst.ensure_collection(model, dim, ["collection", "genre", "diagnosis", "modality", "split"])
        batch = 1000
        for start in range(0, n, batch):
            ids, vecs, payloads = [], [], []
            for i in range(start, min(n, start + batch)):
                p, v = base[i % len(base)]
                vec = v + rng.normal(0, noise / np.sqrt(dim), dim).astype(np.float32)
                payload = {k: val for k, val in p.items() if k not in ("cluster_id", "tier", "canonical",
                                                                      "cluster_tier", "cluster_size")}
                payload["synthetic_index"] = i
                if cluster_every and i % cluster_every == 1 and vecs:
                    vec = vecs[-1] + rng.normal(0, 0.02 / np.sqrt(dim), dim).astype(np.float32)
                    cid = ids[-1]
                    payloads[-1].update(cluster_id=cid, tier="near", canonical=True, cluster_tier="near",
                                        cluster_size=2)
                    payload.update(cluster_id=cid, tier="near", canonical=False, cluster_tier="near",
                                   cluster_size=2)
                ids.append(point_id_for(f"synthetic-{seed}-{i}"))
                vecs.append((vec / np.linalg.norm(vec)).astype(np.float32))
                payloads.append(payload)
            dst.upsert(ids, np.stack(vecs), payloads)
        return dst.count()
    finally:
        dst.close()


def sample_home_once(pristine: Path, collection: str, near_cosine: float = 0.85) -> Path:
    """Build the labelled sample collection under `pristine` once per test session (marker file);
    callers copy the folder, since each process needs its own embedded-Qdrant folder."""
    from recommender.settings import get_settings

    marker = pristine / "READY"
    if not marker.exists():
        cfg = get_settings(home=pristine, collection=collection)
        report = ingest_samples(cfg)
        if report["points"] < 40:
            raise RuntimeError(f"sample ingest produced {report['points']} points; failures: {report['failures'][:5]}")
        label_duplicates(cfg, near_cosine=near_cosine)
        marker.write_text(str(report["points"]))
    return pristine
