"""CLI latency (issue 13): what a user waits for, measured on FRESH processes.

Every figure is one new subprocess, started the way a user starts it, timed from spawn to exit
(wall) with its peak memory. In-process timers (the job's own `seconds`) hide interpreter start,
imports, model load and store open, which is where a one-off command spends its life.

On a scratch RECOMMENDER_HOME built here from the bundled `samples/` corpus, N repeats each:

  1. `recommender --help`                       (target <= 0.3 s)
  2. `recommender similar` with no argument     (a usage error; README says exit 2)
  3. first ingest of samples/ (fresh home each repeat; the job's own seconds from --json beside wall)
  4. a no-op re-ingest of the same corpus      (target wall <= job seconds + 3 s)
  5. `recommender similar <sample image> -k 10` (target <= 2 s)
  6. `recommender serve`: spawn to first 200 from /health, then /items/{id}/similar, then
     /similar/image (target first /similar <= 3 s); the server is killed after.
  5b. the same `similar` on a copy of that home grown to --scale points (default 50,000) with
     synthetic unit vectors upserted and indexed through the store API, each with the payload of a
     stored sample point (per-file fields made unique), so the engine holds the payload indexes a
     real collection holds (target <= 2 s at 50k)
  5c. with --corpus DIR (e.g. ../shared/corpora/brain-mri): one first ingest of that corpus, then
     N no-op re-ingests (target job <= 5 s and wall <= job + 3 s at 7,019 files) and N `similar
     <its first image> -k 10` (issue 12 target at brain-mri: <= 2.5 s, <= 1.2 GB)
  7. baselines in the same run: `python -c pass`, `python -c "import torch, torchvision"`, and the
     plain script a user would write for item 5 (torchvision mobilenet_v2 IMAGENET1K_V1, embed the
     query and every sample .jpg, brute-force cosine), plus the same script reading the sample
     vectors from a .npy instead of embedding them.

Memory: `rss` is the peak of the SUM of RSS over the whole process tree, polled every 10 ms with
psutil (a process shorter than a poll can be missed); `maxrss` is the kernel's peak RSS of the
largest single process of the tree (wait4 rusage), exact.

    python benchmarks/cli_latency.py --repeats 3 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = [str(Path(PY).parent / "recommender")]  # the console script a user runs, from this venv
SAMPLES = ROOT / "samples"
METADATA = SAMPLES / "metadata.csv"
QUERY = SAMPLES / "art" / "landscape" / "cl010052607.jpg"
HEAVY = ("torch", "torchvision", "qdrant_client", "qdrant_edge", "prefect", "numpy", "PIL")
TARGETS = {"help": 0.3, "similar": 2.0, "serve_similar": 3.0, "noop_over_job": 3.0}
POLL_S = 0.010

PLAIN_SCRIPT = r'''
"""What a user would write for `similar IMAGE -k 10` without the product."""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

query, corpus, npy = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
weights = MobileNet_V2_Weights.IMAGENET1K_V1
model = mobilenet_v2(weights=weights).eval()
model.classifier = torch.nn.Identity()
prep = weights.transforms()


def embed(paths):
    out = []
    with torch.inference_mode():
        for i in range(0, len(paths), 16):
            x = torch.stack([prep(Image.open(p).convert("RGB")) for p in paths[i:i + 16]])
            out.append(torch.nn.functional.normalize(model(x), dim=1).numpy())
    return np.concatenate(out)


q = embed([query])[0]
if sys.argv[4:] == ["--from-npy"]:
    db = np.load(npy)
    paths = npy.with_suffix(".txt").read_text().splitlines()
else:
    paths = [str(p) for p in sorted(corpus.rglob("*.jpg"))]
    db = embed(paths)
    np.save(npy, db)
    npy.with_suffix(".txt").write_text("\n".join(paths))
scores = db @ q
for i in np.argsort(-scores)[:10]:
    print(f"{scores[i]:.4f} {paths[i]}")
'''


@dataclass
class Sample:
    """One fresh process: wall seconds, peak memory, exit code and what it printed."""

    wall_s: float
    rss_mb: float
    maxrss_mb: float
    rc: int
    stdout: str = ""
    stderr: str = ""
    marks: dict[str, float] = field(default_factory=dict)


class TreePoller(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, polled until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.proc = psutil.Process(pid)
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self._tree_rss())
            time.sleep(POLL_S)

    def _tree_rss(self) -> int:
        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak


def _spawn(cmd: list[str], env: dict[str, str], out: Path) -> subprocess.Popen:
    """Start cmd with stdout/stderr in files (a full pipe would stall the child and skew its wall)."""
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=open(out / "stdout", "wb"), stderr=open(out / "stderr", "wb"))


def reap(p: subprocess.Popen) -> tuple[int, float]:
    """Wait for the child with wait4, so its own peak RSS (largest process of its tree) comes back."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss / 1024  # KiB on Linux


def run_once(cmd: list[str], env: dict[str, str], scratch: Path,
             during: Optional[Callable[[subprocess.Popen, float], dict[str, float]]] = None) -> Sample:
    """One fresh process from spawn to exit; `during` (serve) talks to it, then ends it."""
    out = Path(tempfile.mkdtemp(dir=scratch))
    t0 = time.perf_counter()
    p = _spawn(cmd, env, out)
    poller = TreePoller(p.pid)
    poller.start()
    marks = during(p, t0) if during else {}
    rc, maxrss = reap(p)
    wall = time.perf_counter() - t0
    peak = poller.stop()
    return Sample(wall, peak / 2**20, maxrss, rc, (out / "stdout").read_text(errors="replace"),
                  (out / "stderr").read_text(errors="replace")[-2000:], marks)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_probe(port: int, item_id: str, timeout: float = 120.0) -> Callable[[subprocess.Popen, float], dict[str, float]]:
    """Seconds from spawn to the first 200 of /health, /items/{id}/similar and /similar/image; then SIGTERM."""
    base = f"http://127.0.0.1:{port}"

    def probe(p: subprocess.Popen, t0: float) -> dict[str, float]:
        marks: dict[str, float] = {}
        try:
            with httpx.Client(base_url=base, timeout=60) as http:
                _wait_health(http, p, t0, timeout)
                marks["health_s"] = time.perf_counter() - t0
                http.get(f"/items/{item_id}/similar", params={"k": 10}).raise_for_status()
                marks["similar_id_s"] = time.perf_counter() - t0
                files = {"file": (QUERY.name, QUERY.read_bytes(), "image/jpeg")}
                http.post("/similar/image", files=files, data={"k": "10"}).raise_for_status()
                marks["similar_image_s"] = time.perf_counter() - t0
        except (httpx.HTTPError, RuntimeError) as exc:
            marks["error"] = str(exc)[:300]  # type: ignore[assignment]
        finally:
            if p.poll() is None:
                p.terminate()
        return marks

    return probe


def _wait_health(http: httpx.Client, p: subprocess.Popen, t0: float, timeout: float) -> None:
    """Poll /health every 20 ms until it answers 200; fail if the server exits or never answers."""
    while time.perf_counter() - t0 < timeout:
        if p.poll() is not None:
            raise RuntimeError(f"serve exited with {p.returncode} before answering")
        try:
            if http.get("/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    raise RuntimeError(f"serve did not answer /health within {timeout:.0f} s")


def heavy_imports(argv: list[str], env: dict[str, str]) -> list[str]:
    """Which heavy modules the CLI imports for argv (one untimed extra process): --help should import none."""
    code = ("import sys; sys.argv = ['recommender', *sys.argv[1:]]\nfrom cli.main import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([PY, "-c", code, *argv], env=env, cwd=ROOT, capture_output=True, text=True)
    line = next((x for x in r.stderr.splitlines() if x.startswith("HEAVY=")), "HEAVY=?")
    return [m for m in line[6:].split(",") if m]


@dataclass
class Measure:
    """All samples of one measurement, their medians and whether each exited as expected."""

    name: str
    cmd: list[str]
    samples: list[Sample]
    expect_rc: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def med(self, key: str) -> float:
        return statistics.median(getattr(s, key) for s in self.samples)

    def med_mark(self, key: str) -> Optional[float]:
        vals = [s.marks[key] for s in self.samples if isinstance(s.marks.get(key), float)]
        return statistics.median(vals) if vals else None

    @property
    def failures(self) -> list[str]:
        bad = [s for s in self.samples if s.rc != self.expect_rc or "error" in s.marks]
        return [f"rc {s.rc} (expected {self.expect_rc}) {s.marks.get('error', '')} {s.stderr.strip()[-300:]}" for s in bad]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "cmd": self.cmd, "expect_rc": self.expect_rc,
                "wall_p50_s": round(self.med("wall_s"), 3), "rss_p50_mb": round(self.med("rss_mb"), 1),
                "maxrss_p50_mb": round(self.med("maxrss_mb"), 1), "failures": self.failures, **self.extra,
                "samples": [{k: v for k, v in asdict(s).items() if k not in ("stdout", "stderr")} for s in self.samples]}


def repeat(name: str, cmd: list[str], env: dict[str, str], scratch: Path, n: int, expect_rc: int = 0,
           during: Optional[Callable[[], Callable[[subprocess.Popen, float], dict[str, float]]]] = None,
           before: Optional[Callable[[int], dict[str, str]]] = None) -> Measure:
    """n fresh processes of cmd; `before(i)` may give each its own env (e.g. a fresh home)."""
    samples = []
    for i in range(n):
        run_env = {**env, **(before(i) if before else {})}
        samples.append(run_once(cmd, run_env, scratch, during() if during else None))
    return Measure(name, cmd, samples, expect_rc)


def job_seconds(m: Measure) -> Optional[float]:
    """Median of the job's own `seconds` from each ingest's --json report."""
    vals = []
    for s in m.samples:
        try:
            vals.append(float(json.loads(s.stdout)["seconds"]))
        except (ValueError, KeyError, TypeError):
            pass
    return statistics.median(vals) if vals else None


def line(m: Measure, note: str = "") -> str:
    """One human line: `similar  wall p50 1.84 s  rss 612 MB  (job 0.31 s)`."""
    fail = f"  FAILED {len(m.failures)}/{len(m.samples)}: {m.failures[0]}" if m.failures else ""
    return (f"{m.name:<22} wall p50 {m.med('wall_s'):6.2f} s  rss {m.med('rss_mb'):6.0f} MB  "
            f"maxrss {m.med('maxrss_mb'):5.0f} MB{('  ' + note) if note else ''}{fail}")


def machine() -> dict[str, Any]:
    """CPUs and load at this moment: the machine is shared, so every figure needs it beside it."""
    return {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def user_env(home: Path) -> dict[str, str]:
    """The environment of a user who has set only their home: no Prefect server, no Dask."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RECOMMENDER_") and k not in ("PREFECT_API_URL",)}
    return {**env, "RECOMMENDER_HOME": str(home)}


def check_inputs() -> None:
    """The corpus this benchmark builds from must be the bundled one, and the command installed."""
    for path in (SAMPLES, METADATA, QUERY, Path(CLI[0])):
        if not path.exists():
            sys.exit(f"error: {path} is missing; run from a full checkout with the project installed "
                     "in this interpreter's environment (`pip install -e .`).")


def _ingest_cmd() -> list[str]:
    return [*CLI, "ingest", str(SAMPLES), "--metadata", str(METADATA), "--json"]


def measure_cli(scratch: Path, n: int, log: Callable[[str], None]) -> tuple[dict[str, Measure], Path]:
    """Items 1-5: help, usage error, first ingest, no-op re-ingest, similar; returns the built home."""
    home = scratch / "home"
    env = user_env(home)
    out: dict[str, Measure] = {}
    out["help"] = repeat("help", [*CLI, "--help"], env, scratch, n)
    out["help"].extra["heavy_imports"] = heavy_imports(["--help"], env)
    log(line(out["help"], f"(target <= {TARGETS['help']} s; heavy imports: {_names(out['help'].extra['heavy_imports'])})"))
    out["usage"] = repeat("usage error", [*CLI, "similar"], env, scratch, n, expect_rc=2)
    out["usage"].extra["heavy_imports"] = heavy_imports(["similar"], env)
    out["usage"].extra["rc"] = [s.rc for s in out["usage"].samples]
    log(line(out["usage"], f"(rc {out['usage'].samples[0].rc}; heavy imports: {_names(out['usage'].extra['heavy_imports'])}; README says 2)"))
    homes = [scratch / f"home{i}" for i in range(n)]
    first = repeat("first ingest", _ingest_cmd(), env, scratch, n, before=lambda i: {"RECOMMENDER_HOME": str(homes[i])})
    first.extra["job_p50_s"] = job_seconds(first)
    out["first_ingest"] = first
    log(line(first, f"(job {_fmt(first.extra['job_p50_s'])} s)"))
    shutil.move(str(homes[-1]), home)  # keep the last built home for the rest
    noop = repeat("no-op re-ingest", _ingest_cmd(), env, scratch, n)
    noop.extra["job_p50_s"] = job_seconds(noop)
    out["noop_ingest"] = noop
    over = noop.med("wall_s") - noop.extra["job_p50_s"] if noop.extra["job_p50_s"] is not None else None
    noop.extra["wall_over_job_s"] = over
    log(line(noop, f"(job {_fmt(noop.extra['job_p50_s'])} s, wall - job {_fmt(over)} s; target <= {TARGETS['noop_over_job']} s)"))
    sim = repeat("similar -k 10", [*CLI, "similar", str(QUERY), "-k", "10", "--json"], env, scratch, n)
    out["similar"] = sim
    log(line(sim, f"(target <= {TARGETS['similar']} s)"))
    return out, home


GROW_SCRIPT = r'''
import sys, numpy as np
from recommender.settings import get_settings
from recommender.store import open_store
home, total = sys.argv[1], int(sys.argv[2])
store = open_store(get_settings(home=home))
have = store.count()
_, template, first = next(store.scroll(batch=1, with_vectors=True))
dim = len(first)
template.pop("copies", None)
def payload(k):  # a stored point's payload with the per-file fields made unique, as an ingest writes them
    h = f"{k:064x}"
    return {**template, "path": f"/synthetic/{k}.jpg", "relpath": f"synthetic/{k}.jpg",
            "item_key": f"/synthetic/{k}.jpg", "sha256": h, "pixel_hash": h[::-1], "phash": h[:16]}
rng = np.random.default_rng(0)
for start in range(have, total, 1024):
    ids = [f"00000000-0000-4000-8000-{k:012d}" for k in range(start, min(start + 1024, total))]
    store.upsert(ids, rng.standard_normal((len(ids), dim)).astype(np.float32),
                 [payload(k) for k in range(start, start + len(ids))])
store.optimize()
print(store.count())
store.close()
'''


def measure_similar_at_scale(home: Path, scratch: Path, n: int, total: int, log: Callable[[str], None]) -> Optional[Measure]:
    """Item 5b: `similar` on a copy of the home grown to `total` points (synthetic vectors, real engine)."""
    if total <= 0:
        return None
    big = scratch / "home_scale"
    shutil.copytree(home, big)
    t = time.perf_counter()
    done = subprocess.run([PY, "-c", GROW_SCRIPT, str(big), str(total)], env=user_env(big), capture_output=True, text=True)
    if done.returncode != 0:
        log(f"similar at scale      SKIPPED: growing the home failed: {done.stderr.strip().splitlines()[-1:]}")
        return None
    log(f"(grew a copy of the home to {done.stdout.strip()} points in {time.perf_counter() - t:.0f} s)")
    m = repeat(f"similar @{total // 1000}k", [*CLI, "similar", str(QUERY), "-k", "10", "--json"], user_env(big), scratch, n)
    log(line(m, f"(target <= {TARGETS['similar']} s)"))
    return m


def measure_corpus(corpus: Path, metadata: Optional[Path], scratch: Path, n: int,
                   log: Callable[[str], None]) -> dict[str, Measure]:
    """Item 5c: a real corpus ingested once, then its no-op re-ingest and `similar` from fresh processes."""
    env = user_env(scratch / "home_corpus")
    ingest = [*CLI, "ingest", str(corpus), *(["--metadata", str(metadata)] if metadata else []), "--json"]
    out = {"corpus_first": repeat(f"{corpus.name} first ingest", ingest, env, scratch, 1)}
    out["corpus_first"].extra["job_p50_s"] = job_seconds(out["corpus_first"])
    log(line(out["corpus_first"], f"(job {_fmt(out['corpus_first'].extra['job_p50_s'])} s)"))
    noop = repeat(f"{corpus.name} no-op", ingest, env, scratch, n)
    noop.extra["job_p50_s"] = job_seconds(noop)
    over = noop.med("wall_s") - noop.extra["job_p50_s"] if noop.extra["job_p50_s"] is not None else None
    log(line(noop, f"(job {_fmt(noop.extra['job_p50_s'])} s, wall - job {_fmt(over)} s; targets job <= 5 s, "
                   f"wall - job <= {TARGETS['noop_over_job']} s)"))
    query = next(p for p in sorted(corpus.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    sim = repeat(f"{corpus.name} similar", [*CLI, "similar", str(query.resolve()), "-k", "10", "--json"], env, scratch, n)
    log(line(sim, "(issue 12 target at brain-mri: <= 2.5 s, <= 1.2 GB)"))
    return {**out, "corpus_noop": noop, "corpus_similar": sim}


def first_id(sim: Measure) -> Optional[str]:
    """A stored point id (the first neighbour `similar` printed), for the API's by-id query."""
    for s in sim.samples:
        try:
            return json.loads(s.stdout)[0]["id"]
        except (ValueError, KeyError, IndexError, TypeError):
            continue
    return None


def measure_serve(home: Path, item_id: Optional[str], scratch: Path, n: int, log: Callable[[str], None]) -> Optional[Measure]:
    """Item 6: `recommender serve`, spawn to the first answers; None when there is no item to ask for."""
    if item_id is None:
        log("serve                  SKIPPED: `similar` printed no result id to query the API with")
        return None
    ports = [_free_port() for _ in range(n)]
    env = user_env(home)
    samples = []
    for port in ports:
        samples.append(run_once([*CLI, "serve", "--port", str(port)], env, scratch, serve_probe(port, item_id)))
    # Stopped with SIGTERM: uvicorn shuts down cleanly, then re-raises the signal, so -15 is a clean stop.
    m = Measure("serve", [*CLI, "serve", "--port", "PORT"], samples, expect_rc=-signal.SIGTERM)
    for key in ("health_s", "similar_id_s", "similar_image_s"):
        m.extra[f"{key[:-2]}_p50_s"] = m.med_mark(key)
    log(line(m, f"(first /health {_fmt(m.extra['health_p50_s'])} s, /items/ID/similar {_fmt(m.extra['similar_id_p50_s'])} s, "
                f"/similar/image {_fmt(m.extra['similar_image_p50_s'])} s; target first /similar <= {TARGETS['serve_similar']} s; "
                "wall includes shutdown)"))
    return m


def measure_baselines(scratch: Path, n: int, log: Callable[[str], None]) -> dict[str, Measure]:
    """Item 7: the interpreter floor, the torch floor and the plain script a user would write."""
    env = user_env(scratch / "unused")
    script = scratch / "plain_similar.py"
    script.write_text(PLAIN_SCRIPT)
    npy = scratch / "plain_vectors.npy"
    out = {
        "python": repeat("python -c pass", [PY, "-c", "pass"], env, scratch, n),
        "torch": repeat("import torch,tv", [PY, "-c", "import torch, torchvision"], env, scratch, n),
        "plain_all": repeat("plain script (embed)", [PY, str(script), str(QUERY), str(SAMPLES), str(npy)], env, scratch, n),
    }
    out["plain_npy"] = repeat("plain script (.npy)", [PY, str(script), str(QUERY), str(SAMPLES), str(npy), "--from-npy"], env, scratch, n)
    notes = {"plain_all": "(embeds the query + 50 sample .jpg, cosine top 10)", "plain_npy": "(embeds the query, reads the 50 vectors from .npy)"}
    for key, m in out.items():
        log(line(m, notes.get(key, "")))
    return out


def ratios(cli: dict[str, Measure], serve: Optional[Measure], base: dict[str, Measure]) -> dict[str, Optional[float]]:
    """ours / baseline, wall p50 (and RSS for similar): the figures that survive a noisy machine."""
    def r(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return round(a / b, 2) if a is not None and b else None

    sim, plain, npy, torch_ = cli["similar"], base["plain_all"], base["plain_npy"], base["torch"]
    return {
        "help / python -c pass": r(cli["help"].med("wall_s"), base["python"].med("wall_s")),
        "usage error / python -c pass": r(cli["usage"].med("wall_s"), base["python"].med("wall_s")),
        "similar / import torch,torchvision": r(sim.med("wall_s"), torch_.med("wall_s")),
        "similar / plain script (embed)": r(sim.med("wall_s"), plain.med("wall_s")),
        "similar / plain script (.npy)": r(sim.med("wall_s"), npy.med("wall_s")),
        "similar rss / plain script (.npy) rss": r(sim.med("rss_mb"), npy.med("rss_mb")),
        "no-op re-ingest / import torch,torchvision": r(cli["noop_ingest"].med("wall_s"), torch_.med("wall_s")),
        "serve first /items/ID/similar / plain script (.npy)": r(serve.extra.get("similar_id_p50_s") if serve else None, npy.med("wall_s")),
        "serve first /similar/image / plain script (.npy)": r(serve.extra.get("similar_image_p50_s") if serve else None, npy.med("wall_s")),
    }


def _names(mods: list[str]) -> str:
    return ", ".join(mods) or "none"


def _fmt(x: Optional[float]) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (median reported)")
    ap.add_argument("--json", action="store_true", help="print one JSON document on stdout (lines go to stderr)")
    ap.add_argument("--scale", type=int, default=50_000, help="points for the similar-at-scale item (0 skips it)")
    ap.add_argument("--corpus", type=Path, help="also ingest this image folder once and time its no-op re-ingest and similar")
    ap.add_argument("--corpus-metadata", type=Path, help="metadata table for --corpus")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder (its path is printed)")
    args = ap.parse_args()
    if args.repeats < 1:
        sys.exit("error: --repeats must be >= 1")
    check_inputs()
    stream = sys.stderr if args.json else sys.stdout

    def log(text: str) -> None:
        print(text, file=stream, flush=True)

    start = machine()
    log(f"machine: {start['cpus']} cpus, load avg {start['load_avg']} at start, python {start['python']}, {start['date']}; "
        f"repeats {args.repeats}; rss = peak sum over the process tree (psutil, {POLL_S * 1000:.0f} ms polls), "
        "maxrss = largest single process (wait4)")
    scratch = Path(tempfile.mkdtemp(prefix="cli_latency_"))
    try:
        cli, home = measure_cli(scratch, args.repeats, log)
        serve = measure_serve(home, first_id(cli["similar"]), scratch, args.repeats, log)
        scaled = measure_similar_at_scale(home, scratch, args.repeats, args.scale, log)
        if scaled:
            cli["similar_scale"] = scaled
        if args.corpus:
            cli.update(measure_corpus(args.corpus, args.corpus_metadata, scratch, args.repeats, log))
        base = measure_baselines(scratch, args.repeats, log)
    finally:
        if args.keep:
            log(f"scratch kept at {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    rat = ratios(cli, serve, base)
    for key, val in rat.items():
        log(f"ratio {key:<52} {_fmt(val)}")
    end_load = [round(x, 2) for x in os.getloadavg()]
    log(f"load avg at end {end_load}")
    if args.json:
        every = {**cli, **({"serve": serve} if serve else {}), **{f"baseline_{k}": v for k, v in base.items()}}
        print(json.dumps({"machine": {**start, "load_avg_end": end_load}, "targets": TARGETS, "ratios": rat,
                          "measurements": {k: m.to_dict() for k, m in every.items()}}, indent=1))


if __name__ == "__main__":
    main()
