"""The embedded store at scale: our store (edge engine) vs faiss HNSW vs numpy exact, one run.

Issue 12's benchmark. For each scale, 1280-d clustered unit vectors (the default model's
stored dimension; clusters of varying size and spread, like image embeddings, not uniform) drawn
with the covariance spectrum of real MobileNetV2 embeddings (`benchmarks/data/embedding_spectrum.npz`,
saved from the brain-mri collection: a PCA index picks candidates on them as on the real vectors;
`--isotropic` for isotropic clusters, the hard case; `--like HOME` for another collection's spectrum),
with the payload an ingest of paintings writes (`ingest_payload`) and a `bucket` keyword that a
filter keeps 10 % of:

  - ours: `open_store` with `store_backend=edge` through the product's `VectorStore`
    (upsert batches of 256, `optimize()` = search-basis fit and index build, queries by point
    id); the line ends with the search vector the fit chose (`VectorStore.search_info`);
  - faiss: `IndexHNSWFlat` M 32 (efConstruction 40, faiss' default), inner product on unit
    vectors; efSearch tuned to the smallest value whose recall@10 reaches ours;
  - numpy exact: matrix @ vector + argpartition, the ground truth of the recall figures.

Per system and scale: upsert points/s, index build seconds, open seconds, first-query seconds
and peak RSS of a FRESH process (a child that opens the data and answers one query), p50/p95
of similar-by-id top-10 without and with the 10 % filter, recall@10 against exact (the query
item itself excluded). One line per scale and system, and `--json` for everything.

The p50/p95 of ours are those of a served collection, in a process of its own as the API's would
be: the store opened, its files read into the page cache the way the API and the dashboard do it in
the background (`VectorStore.prefetch`; the line gives how much, how long and that process's peak
RSS), then 20 warm-up queries that are never measured. What a one-off command pays is the fresh
process's open + first query.

    python benchmarks/store_scale.py --sizes 10000 50000 --queries 200
    python benchmarks/store_scale.py --sizes 200000 --with-1m   # 1M takes long on 2 cores
    python benchmarks/store_scale.py --sizes 50000 --like var     # vectors with the spectrum of an ingested home
    python benchmarks/store_scale.py --sizes 50000 --isotropic    # isotropic clusters
    python benchmarks/store_scale.py --save-spectrum HOME         # ship HOME's spectrum as the default
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM, K, BUCKETS = 1280, 10, 10


def _mixture(rng: np.random.Generator, n: int, c: np.ndarray, spread_scale: float = 1.0,
             root: np.ndarray | None = None) -> np.ndarray:
    """n unit vectors around the centres `c`: Zipf-like cluster sizes, a spread per cluster, Gaussian
    noise (isotropic, or shaped by `root`: z @ root ~ N(0, cov))."""
    centers, dim = c.shape
    weights = 1.0 / np.arange(1, centers + 1) ** 0.7
    labels = rng.choice(centers, n, p=weights / weights.sum())
    spread = spread_scale * rng.uniform(0.3, 0.9, centers).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 20_000):  # in blocks: no second n x dim float64 temporary
        lab = labels[s:s + 20_000]
        z = rng.standard_normal((len(lab), dim), dtype=np.float32)
        v = c[lab] + spread[lab, None] * (z if root is None else z @ root)
        out[s:s + 20_000] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors around ~n/50 centres with Zipf-like cluster sizes and per-cluster spread."""
    rng = np.random.default_rng(seed)
    return _mixture(rng, n, rng.standard_normal((max(20, n // 50), dim)).astype(np.float32))


SPECTRUM = Path(__file__).resolve().parent / "data" / "embedding_spectrum.npz"


def save_spectrum(home: Path, path: Path = SPECTRUM) -> None:
    """Keep the covariance eigenvalues of the collection in `home`, and its mean in that eigenbasis
    (10 KB for 1,280 dimensions): all `shipped_spectrum` needs to draw vectors with its geometry."""
    like = real_vectors(home).astype(np.float64)
    mean = like.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov((like - mean).T))
    order = np.argsort(values)[::-1]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, eigenvalues=np.clip(values[order], 0.0, None).astype(np.float32),
             mean_coords=(vectors[:, order].T @ mean).astype(np.float32), source=str(home), count=len(like))


def shipped_spectrum(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, root) with `SPECTRUM`'s eigenvalues, in a random orthonormal basis (seeded): the same
    geometry as the collection it was saved from (cosines are rotation-invariant), not aligned with the
    axes (which int8 quantization would notice)."""
    with np.load(SPECTRUM) as f:
        values, coords = f["eigenvalues"].astype(np.float64), f["mean_coords"].astype(np.float64)
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((len(values), len(values))))
    q *= np.sign(np.diag(r))
    return (q @ coords).astype(np.float32), (q * np.sqrt(values)).T.astype(np.float32)


def spectral(n: int, like: np.ndarray | None, seed: int, centre_scale: float = 0.8, spread_scale: float = 1.0) -> np.ndarray:
    """Unit vectors clustered as `clustered` draws them, but with the mean and covariance spectrum of real
    embeddings `like` (rows of an ingested collection): centres and spreads are Gaussian in the real
    covariance, so a PCA of them sees the real decay of variance, where `clustered`'s isotropic noise
    spreads it over every dimension (and would understate how well a small PCA index picks candidates).
    The two scales were set so that a PCA-128 index fitted on 512 vectors picks candidates as it does on
    the real brain-mri vectors (docs/benchmarks.md, "Vectors with a real spectrum"). `like=None`: the
    spectrum shipped in `SPECTRUM` (brain-mri's, saved with `--save-spectrum`), the benchmark's default."""
    rng = np.random.default_rng(seed)
    if like is None:
        mean, root = shipped_spectrum(seed)
    else:
        like = np.asarray(like, dtype=np.float64)
        mean = like.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov((like - mean).T))
        root = (vectors * np.sqrt(np.clip(values, 0.0, None))).T.astype(np.float32)  # z @ root ~ N(0, cov)
        mean = mean.astype(np.float32)
    z = rng.standard_normal((max(20, n // 50), root.shape[1]), dtype=np.float32)
    return _mixture(rng, n, mean + centre_scale * z @ root, spread_scale, root)


def real_vectors(home: Path, limit: int = 20_000) -> np.ndarray:
    """Up to `limit` stored vectors of the collection in `home` (the model's space, unit rows)."""
    from recommender.settings import get_settings
    from recommender.store import open_store

    store = open_store(get_settings(home=home))
    try:
        rows = [v for _, _, v in itertools.islice(store.scroll(batch=1024, with_vectors=True), limit)]
    finally:
        store.close()
    if len(rows) < 2:
        raise SystemExit(f"--like {home}: the collection holds {len(rows)} vectors; ingest a corpus there first")
    return np.stack(rows)


def ids_for(n: int) -> list[str]:
    from recommender.store import point_id_for

    return [point_id_for(f"bench-{i}") for i in range(n)]


def ingest_payload(i: int, bucket: int) -> dict:
    """The payload an ingest of a painting collection writes (the fields of a point of `samples/art`,
    values unique where the product's are), plus the `bucket` column the filter selects on; one point
    in 25 sits in a copy cluster. Realistic because the engine loads one payload index per field a
    collection holds when it opens it: a bare payload would flatter the open time."""
    h = f"{i:064x}"
    p = {"path": f"/data/paintings/{i % 97}/img_{i:07d}.jpg", "relpath": f"{i % 97}/img_{i:07d}.jpg",
         "item_key": f"/data/paintings/{i % 97}/img_{i:07d}.jpg", "sha256": h, "source": "/data/paintings",
         "model": "mobilenet_v2", "run_id": f"{i // 50_000:032x}", "ingested_at": 1.79e9 + i, "width": 500,
         "height": 400 + i % 200, "bytes": 20_000 + i % 40_000, "pixel_hash": h[::-1], "phash": h[:16],
         "phash_mirror": h[16:32], "genre": f"genre{i % 12}", "split": "test" if i % 5 == 0 else "train",
         "bucket": f"b{bucket}"}
    if i % 25 == 0:
        p.update(cluster_id=f"c{i // 50:08d}", tier="copy", canonical=i % 50 == 0)
    return p


def buckets(n: int) -> np.ndarray:
    return np.arange(n) % BUCKETS  # bucket 0 = the 10 % the filter keeps


def exact_topk(x: np.ndarray, q: int, mask: np.ndarray | None = None) -> np.ndarray:
    scores = x @ x[q]
    scores[q] = -np.inf
    if mask is not None:
        scores[~mask] = -np.inf
    top = np.argpartition(-scores, K)[:K]
    return top[np.argsort(-scores[top])]


def pcts(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 95))


def recall(got: list[list[int]], truth: list[np.ndarray]) -> float:
    return float(np.mean([len(set(g) & set(t.tolist())) / K for g, t in zip(got, truth)]))


def fresh_process(kind: str, folder: Path, query: int) -> dict:
    """Open + first query in a child process: what a new CLI call or API worker pays."""
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(folder), str(query)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so not inherited from the parent that
    forked it, as getrusage's ru_maxrss is across exec)."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, folder: str, query: int) -> None:
    import faiss  # noqa: F401  (imported up front in every child so RSS baselines compare)

    from recommender.settings import get_settings
    from recommender.store import open_store

    base = peak_rss_mb()
    t = time.perf_counter()
    if kind == "ours":
        store = open_store(get_settings(home=folder, store_backend="edge", collection="bench"))
        opened = time.perf_counter() - t
        pid = ids_for(query + 1)[query]
        t = time.perf_counter()
        store.query(pid, K)
    elif kind == "faiss":
        index = faiss.read_index(str(Path(folder) / "hnsw.faiss"))
        opened = time.perf_counter() - t
        x = np.load(Path(folder) / "vectors.npy", mmap_mode="r")
        t = time.perf_counter()
        index.search(np.asarray(x[query:query + 1]), K + 1)
    else:
        x = np.load(Path(folder) / "vectors.npy")
        opened = time.perf_counter() - t
        t = time.perf_counter()
        exact_topk(x, query)
    first = time.perf_counter() - t
    rss = peak_rss_mb()
    print(json.dumps({"open_s": opened, "first_query_s": first, "rss_mb": rss, "rss_after_imports_mb": base}))


def fill(store, collection: str, x: np.ndarray, batch: int = 256) -> tuple[float, float]:
    """Write `x` with an ingest's payload (`ids_for` ids, `bucket` for the 10 % filter) through the
    product's `VectorStore`, then build the index; returns (upsert seconds, build seconds)."""
    ids, b = ids_for(len(x)), buckets(len(x))
    store.ensure_collection(collection, x.shape[1], ["bucket", "genre"])
    t = time.perf_counter()
    for s in range(0, len(x), batch):
        store.upsert(ids[s:s + batch], x[s:s + batch],
                     [ingest_payload(i, b[i]) for i in range(s, min(s + batch, len(x)))])
    upsert_s = time.perf_counter() - t
    t = time.perf_counter()
    store.optimize()
    return upsert_s, time.perf_counter() - t


def bench_ours(x: np.ndarray, folder: Path, queries: np.ndarray, batch: int, reuse: bool = False,
               filtered_ef: list[int] | None = None, variants: list[str] | None = None) -> dict:
    from recommender.settings import get_settings
    from recommender.store import open_store

    cfg = get_settings(home=folder, store_backend="edge", collection="bench")
    store = open_store(cfg)
    upsert_s = build_s = float("nan")
    if not (reuse and store.exists() and store.count() == len(x)):
        upsert_s, build_s = fill(store, "bench", x, batch)
    search = store.search_info()
    store.close()
    fresh = fresh_process("ours", folder, int(queries[0]))
    np.save(folder / "queries.npy", queries)
    out = subprocess.run([sys.executable, __file__, "--served", str(folder), str(len(x)),
                          *(["--filtered-ef", *map(str, filtered_ef)] if filtered_ef else []),
                          *(["--filtered-variants", *variants] if variants else [])],
                         capture_output=True, text=True, check=True)
    served = json.loads(out.stdout.strip().splitlines()[-1])
    return {"upsert_pts_s": len(x) / upsert_s, "build_s": build_s, "search": search, **fresh, **served}


VARIANT_KEYS = {"ef": "FILTERED_EF_FACTOR", "os": "FILTERED_OVERSAMPLING", "acorn": "FILTERED_ACORN"}


def variant_settings(text: str) -> dict[str, float | None]:
    """`ef=256,os=4,acorn=0.4` -> the edge module's filtered-query constants (ef in points, turned
    into the factor over HNSW_EF; acorn=0 is off)."""
    from recommender.store import edge as edge_engine

    out: dict[str, float | None] = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key not in VARIANT_KEYS:
            raise SystemExit(f"--filtered-variants: unknown key '{key}' in '{text}'; use {', '.join(VARIANT_KEYS)}")
        v = float(value)
        out[VARIANT_KEYS[key]] = (max(1, int(v) // edge_engine.HNSW_EF) if key == "ef"
                                  else (v or None) if key == "acorn" else v)
    return out


def served(folder: str, n: int, filtered_ef: list[int] | None = None, variants: list[str] | None = None) -> None:
    """A served collection, in its own process as the API's would be (not beside the benchmark's arrays):
    open, read the files into the page cache as `VectorStore.prefetch` does in the background, 20
    warm-up queries that are never measured, then the measured ones without and with the filter
    (and with the filter at each `filtered_ef` instead of the product's beam, to choose that beam)."""
    from recommender.settings import get_settings
    from recommender.store import edge as edge_engine
    from recommender.store import open_store

    queries = np.load(Path(folder) / "queries.npy")
    ids = ids_for(n)
    row = {i: k for k, i in enumerate(ids)}
    store = open_store(get_settings(home=folder, store_backend="edge", collection="bench"))
    t = time.perf_counter()
    warm_bytes = store.prefetch(wait=True)
    res: dict = {"warmup_s": time.perf_counter() - t, "warm_mb": warm_bytes / 1e6}
    others = np.setdiff1d(np.arange(n), queries)[:20]
    runs = [("nofilter", None, None), ("filter", {"bucket": "b0"}, None)]
    runs += [(f"filter_ef{ef}", {"bucket": "b0"}, variant_settings(f"ef={ef}")) for ef in filtered_ef or []]
    runs += [(f"filter_{v}", {"bucket": "b0"}, variant_settings(v)) for v in variants or []]
    defaults = {k: getattr(edge_engine, k) for k in VARIANT_KEYS.values()}
    for name, must, settings in runs:
        for k, v in {**defaults, **(settings or {})}.items():
            setattr(edge_engine, k, v)
        for q in others:
            store.query(ids[q], K, must=must)
        times, got = [], []
        for q in queries:
            t = time.perf_counter()
            hits = store.query(ids[q], K, must=must)
            times.append(time.perf_counter() - t)
            got.append([row[h.id] for h in hits])
        res[name] = {"times": times, "got": got}
    res["served_rss_mb"] = peak_rss_mb()
    res["served_rss_split_mb"] = rss_split_mb()  # while open: anonymous (its own) vs file pages (shared cache)
    store.close()
    print(json.dumps(res))


def rss_split_mb() -> dict[str, float]:
    """Resident memory now, by kind: RssAnon is the process's own; RssFile are page-cache pages of the
    engine's memory-mapped files that it has touched (shared, dropped by the OS under pressure)."""
    out = {}
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(("RssAnon:", "RssFile:")):
            out[row.split(":")[0]] = int(row.split()[1]) / 1024
    return out


def bench_faiss(x: np.ndarray, folder: Path, queries: np.ndarray, truth: dict, target: float) -> dict:
    import faiss

    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    t = time.perf_counter()
    index.add(x)
    build_s = time.perf_counter() - t
    faiss.write_index(index, str(folder / "hnsw.faiss"))
    fresh = fresh_process("faiss", folder, int(queries[0]))
    mask = buckets(len(x)) == 0
    sel = faiss.IDSelectorBatch(np.flatnonzero(mask).astype(np.int64))
    res: dict = {"upsert_pts_s": None, "build_s": build_s, **fresh}
    for name, selector in (("nofilter", None), ("filter", sel)):
        for ef in (16, 32, 64, 128, 256, 512, 1024):  # the smallest ef that reaches our recall
            params = faiss.SearchParametersHNSW(efSearch=ef, sel=selector) if selector else faiss.SearchParametersHNSW(efSearch=ef)
            times, got = [], []
            for q in queries:
                t = time.perf_counter()
                _, idx = index.search(x[q:q + 1], K + 1, params=params)
                times.append(time.perf_counter() - t)
                got.append([int(i) for i in idx[0] if i != q and i >= 0][:K])
            if recall(got, truth[name]) >= target[name] - 1e-9 or ef == 1024:
                break
        res[name] = {"times": times, "got": got, "ef": ef}
    return res


def bench_exact(x: np.ndarray, folder: Path, queries: np.ndarray) -> tuple[dict, dict]:
    fresh = fresh_process("exact", folder, int(queries[0]))
    mask = buckets(len(x)) == 0
    res: dict = {"upsert_pts_s": None, "build_s": 0.0, **fresh}
    truth: dict = {}
    for name, m in (("nofilter", None), ("filter", mask)):
        times, got = [], []
        for q in queries:
            t = time.perf_counter()
            got.append(exact_topk(x, q, m))
            times.append(time.perf_counter() - t)
        res[name] = {"times": times, "got": [g.tolist() for g in got]}
        truth[name] = got
    return res, truth


def line(n: int, system: str, r: dict, truth: dict) -> tuple[str, dict]:
    summary = {"n": n, "system": system}
    for name in ("nofilter", "filter"):
        p50, p95 = pcts(r[name]["times"])
        summary[name] = {"p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
                         "recall@10": round(recall(r[name]["got"], truth[name]), 4), "ef": r[name].get("ef")}
    for key in ("upsert_pts_s", "build_s", "warmup_s", "warm_mb", "served_rss_mb", "open_s", "first_query_s", "rss_mb",
                "rss_after_imports_mb"):
        summary[key] = None if r.get(key) is None else round(r[key], 3)
    summary["search"] = r.get("search")
    a, f = summary["nofilter"], summary["filter"]
    ups = f"{summary['upsert_pts_s']:,.0f} pts/s" if summary["upsert_pts_s"] else "-"
    text = (f"{n:>9,} {system:<6} p50 {a['p50_ms']:.2f} ms p95 {a['p95_ms']:.2f} ms recall@10 {a['recall@10']:.3f}"
            f" | filter10% p50 {f['p50_ms']:.2f} ms p95 {f['p95_ms']:.2f} ms recall@10 {f['recall@10']:.3f}"
            f" | upsert {ups} build {summary['build_s']:.1f} s | fresh open {summary['open_s']:.2f} s"
            f" first query {summary['first_query_s'] * 1000:.1f} ms rss {summary['rss_mb']:,.0f} MB"
            f" (after imports {summary['rss_after_imports_mb']:,.0f} MB)")
    if system == "faiss":
        text += f" efSearch {a['ef']}/{f['ef']}"
    if summary["search"] and summary["search"].get("search") in ("pca", "full"):
        s = summary["search"]
        text += f" | search {s['search']} {s['dim']}-d pool {s['pool']} (sample recall {s['sample_recall']})"
    if summary["warmup_s"] is not None:
        split = r.get("served_rss_split_mb") or {}
        text += (f" | served: warm-up read {summary['warm_mb']:,.0f} MB in {summary['warmup_s']:.1f} s,"
                 f" peak rss {summary['served_rss_mb']:,.0f} MB (anon {split.get('RssAnon', 0):,.0f} MB,"
                 f" file {split.get('RssFile', 0):,.0f} MB)")
    return text, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    ap.add_argument("--with-1m", action="store_true", help="also 1,000,000 (long on 2 cores)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256, help="points per upsert (the product's default)")
    ap.add_argument("--home", type=Path, default=None, help="scratch folder (default: a temp dir, removed)")
    ap.add_argument("--reuse", action="store_true", help="with --home: keep a collection built by an earlier run")
    ap.add_argument("--dim", type=int, default=DIM,
                    help="stored dimension (default 1280, MobileNetV2's; 256 = after a PCA-256 reduction)")
    ap.add_argument("--like", type=Path, default=None, metavar="HOME",
                    help="draw vectors with the spectrum of the collection ingested in HOME (its dimension) "
                         "instead of the shipped one")
    ap.add_argument("--isotropic", action="store_true",
                    help="isotropic clusters (`clustered`, the hard case for a PCA index; --dim applies) "
                         "instead of the shipped spectrum")
    ap.add_argument("--save-spectrum", type=Path, default=None, metavar="HOME",
                    help=f"save the spectrum of the collection in HOME to {SPECTRUM.relative_to(SPECTRUM.parents[2])} and exit")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs=3, metavar=("KIND", "FOLDER", "QUERY"), help=argparse.SUPPRESS)
    ap.add_argument("--served", nargs=2, metavar=("FOLDER", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--filtered-ef", type=int, nargs="*", default=[],
                    help="also measure ours with the filter at these HNSW beams (the product's is 64 x FILTERED_EF_FACTOR)")
    ap.add_argument("--filtered-variants", nargs="*", default=[], metavar="ef=N,os=X,acorn=S",
                    help="also measure ours with the filter under these settings (beam, int8 oversampling, ACORN "
                         "up to selectivity S; unset keys keep the product's)")
    ap.add_argument("--payload-m", type=int, default=None,
                    help="build ours with this many links per point within each value of a filtered field")
    ap.add_argument("--systems", nargs="+", default=["ours", "faiss", "exact"], choices=["ours", "faiss", "exact"],
                    help="which systems to print (exact always runs: it is the recall ground truth)")
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return
    if args.served:
        served(args.served[0], int(args.served[1]), args.filtered_ef, args.filtered_variants)
        return
    if args.save_spectrum:
        save_spectrum(args.save_spectrum)
        return
    if args.payload_m is not None:
        from recommender.store import edge as edge_engine

        edge_engine.PAYLOAD_M = args.payload_m
    if args.dim != DIM and not args.isotropic:
        raise SystemExit("--dim applies to --isotropic vectors only (a spectrum has its own dimension)")
    sizes = args.sizes + ([1_000_000] if args.with_1m else [])
    root = args.home or Path(tempfile.mkdtemp(prefix="store_scale_"))
    print(f"# {platform.platform()} {os.cpu_count()} cpus, python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    results = []
    like = real_vectors(args.like) if args.like else None
    for n in sizes:
        folder = root / str(n)
        if args.reuse and (folder / "vectors.npy").is_file():
            x = np.load(folder / "vectors.npy")
        else:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            x = clustered(n, args.dim, seed=n) if args.isotropic else spectral(n, like, seed=n)
            np.save(folder / "vectors.npy", x)
        queries = np.random.default_rng(1).choice(n, args.queries, replace=False)
        exact, truth = bench_exact(x, folder, queries)
        ours = bench_ours(x, folder, queries, args.batch, args.reuse, args.filtered_ef, args.filtered_variants)
        target = {k: recall(ours[k]["got"], truth[k]) for k in ("nofilter", "filter")}
        faiss_r = bench_faiss(x, folder, queries, truth, target) if "faiss" in args.systems else None
        for system, r in (("ours", ours), ("faiss", faiss_r), ("exact", exact)):
            if system not in args.systems:
                continue
            text, summary = line(n, system, r, truth)
            print(text, flush=True)
            results.append(summary)
        for name in [f"ef {ef}" for ef in args.filtered_ef] + args.filtered_variants:
            r = ours[f"filter_{name.replace(' ', '')}"]
            p50, p95 = pcts(r["times"])
            print(f"{n:>9,} ours   filter10% at {name}: p50 {p50:.2f} ms p95 {p95:.2f} ms "
                  f"recall@10 {recall(r['got'], truth['filter']):.3f}", flush=True)
        if args.home is None:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
