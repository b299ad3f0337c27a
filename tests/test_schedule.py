"""`recommender schedule`: input checks, and one scheduled run completing on a real Prefect server.

The end-to-end test starts `prefect server start` on loopback and `recommender schedule`
in subprocesses with their own environment: the session-wide `prefect_test_harness`
(conftest) points this process at a temporary API, which the subprocesses must not see.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.schedule import deployment_name, flow_parameters
from recommender.settings import get_settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
RUN_TIMEOUT_S = 180

pytestmark = pytest.mark.slow  # Prefect flows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, sig: int = signal.SIGINT, wait: float = 30) -> None:
    """Ask nicely (SIGINT: the runner pauses its schedule, the server shuts down), then kill the group."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _tail(path: Path, n: int = 4000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


@pytest.fixture
def three_images(tmp_path) -> Path:
    src = tmp_path / "three"
    src.mkdir()
    for f in sorted((REPO / "samples" / "art" / "naturmort").glob("*.jpg"))[:3]:
        shutil.copy(f, src / f.name)
    assert len(list(src.iterdir())) == 3
    return src


def test_schedule_requires_exactly_one_schedule(three_images):
    runner = CliRunner()
    for args in ([str(three_images)], [str(three_images), "--cron", "* * * * *", "--interval", "5"]):
        res = runner.invoke(app, ["schedule", *args])
        assert res.exit_code != 0
        assert "exactly one of --cron" in str(res.exception)


def test_schedule_rejects_bad_cron_and_missing_source(three_images, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["schedule", str(three_images), "--cron", "every day"])
    assert res.exit_code != 0 and "not a valid cron expression" in str(res.exception)
    res = runner.invoke(app, ["schedule", str(tmp_path / "nope"), "--interval", "5"])
    assert res.exit_code != 0 and "does not exist" in str(res.exception)


def test_schedule_needs_a_reachable_server(three_images, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = _free_port()  # nothing listens there
    with temporary_settings({PREFECT_API_URL: f"http://127.0.0.1:{port}/api"}):
        res = CliRunner().invoke(app, ["schedule", str(three_images), "--interval", "5"])
    assert res.exit_code != 0 and "not reachable" in str(res.exception)


def test_flow_parameters_are_absolute_and_hold_no_secret(three_images, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECOMMENDER_QDRANT_API_KEY", "s3cret")
    cfg = get_settings(home=Path("rel-home"))
    params = flow_parameters(Path(three_images.name), None, cfg)
    assert params["source"] == str(three_images)
    assert params["settings"]["home"] == str(tmp_path / "rel-home")
    assert "qdrant_api_key" not in params["settings"] and "s3cret" not in str(params)
    assert deployment_name(three_images) == "ingest-three"


def test_scheduled_run_completes_on_real_prefect_server(three_images, tmp_path):
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    home = tmp_path / "rhome"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DO_NOT_TRACK="1",
        PREFECT_UI_ENABLED="false",
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
        PREFECT_RUNNER_POLL_FREQUENCY="2",
        RECOMMENDER_HOME=str(home),
        RECOMMENDER_DEVICE="cpu",
        RECOMMENDER_DECODE_WORKERS="0",
    )
    server_log, serve_log = tmp_path / "server.log", tmp_path / "serve.log"
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=server_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    serve = None
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, f"prefect server exited:\n{_tail(server_log)}"
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"prefect server not healthy in 90 s:\n{_tail(server_log)}"
            time.sleep(1)

        serve = subprocess.Popen(
            [str(BIN / "recommender"), "schedule", str(three_images), "--interval", "5", "--name", "every5"],
            env=env, cwd=tmp_path, stdout=serve_log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        states: list[str] = []
        with httpx.Client(base_url=api, timeout=10) as client:
            dep_id = None
            while True:
                assert serve.poll() is None, f"recommender schedule exited:\n{_tail(serve_log)}"
                assert time.monotonic() < deadline, f"no COMPLETED run in {RUN_TIMEOUT_S} s; states {states}\n{_tail(serve_log)}"
                if dep_id is None:
                    r = client.get("/deployments/name/ingest/every5")
                    dep_id = r.json()["id"] if r.status_code == 200 else None
                if dep_id:
                    runs = client.post("/flow_runs/filter", json={"flow_runs": {"deployment_id": {"any_": [dep_id]}}}).json()
                    states = [run["state_type"] for run in runs]
                    bad = [s for s in states if s in ("FAILED", "CRASHED")]
                    assert not bad, f"scheduled run {bad}:\n{_tail(serve_log)}"
                    if "COMPLETED" in states:
                        break
                time.sleep(2)
            dep = client.get(f"/deployments/{dep_id}").json()
            assert dep["parameters"]["source"] == str(three_images)
            assert any(s["schedule"].get("interval") == 5.0 for s in dep["schedules"])
    finally:
        if serve is not None:
            _stop(serve)
        _stop(server)
    assert serve.returncode is not None and server.returncode is not None
    # The run really ingested the three images into the data home given by the environment.
    from recommender.store import open_store

    store = open_store(get_settings(home=home))
    try:
        assert store.count() == 3
    finally:
        store.close()
