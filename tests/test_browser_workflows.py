"""The analyst's and the curator's day in a real browser (Debian's chromium via Playwright), on
collections the real pipeline built in one data home:

- `planted`: the sample corpus with planted exact / copy / near duplicates, ingested by the Prefect
  flow and swept by the dedupe (conftest's `pipeline_built`);
- `brain`: 64 real brain-MRI slices from ../shared/corpora/brain-mri (8 per diagnosis and split)
  with their labels table, ingested by the pipeline;
- `dicom`: pydicom's bundled CT, MR and 15-frame RT-dose files, ingested by the pipeline.

The analyst switches collection, filters brain-mri by diagnosis and split and DICOM by series,
and selects points on the map and exports them; the curator records decisions on a copy cluster,
reloads, sees them and exports them. Screenshots go to $RECOMMENDER_SCREENSHOTS_DIR when set
(docs/screenshots), else to a temporary folder.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from test_browser import CHROMIUM, TIMEOUT_MS, _download, _settle, _shot, dashboard_server

pytestmark = pytest.mark.slow

PER_GROUP = 8


def _brain_subset(corpora: Path, dst: Path) -> Path:
    """The first PER_GROUP slices of each (diagnosis, split) of brain-mri, with a labels table."""
    rows = list(csv.DictReader(open(corpora / "brain-mri" / "labels.csv")))
    taken: Counter = Counter()
    keep = []
    for row in rows:
        group = (row["diagnosis"], row["split"])
        if taken[group] < PER_GROUP:
            taken[group] += 1
            keep.append(row)
    for row in keep:
        target = dst / row["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpora / "brain-mri" / row["path"], target)
    with open(dst / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["path", "diagnosis", "split"])
        writer.writeheader()
        writer.writerows(keep)
    return dst / "labels.csv"


def _dicom_folder(dst: Path) -> Path:
    from pydicom.data import get_testdata_file

    dst.mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm"):
        shutil.copy(get_testdata_file(name), dst / name)
    return dst


@pytest.fixture(scope="module")
def home(pipeline_built, corpora, tmp_path_factory):
    """One data home holding the three collections, each built by the real ingest."""
    from recommender.ingest import run_ingest
    from recommender.store import open_store

    base = tmp_path_factory.mktemp("workflows")
    cfg = pipeline_built.copy_home(base / "home")
    labels = _brain_subset(corpora, base / "brain")
    brain = cfg.with_overrides(collection="brain")
    assert run_ingest(brain, base / "brain", labels).failed == 0
    dicom = cfg.with_overrides(collection="dicom")
    assert run_ingest(dicom, _dicom_folder(base / "dicom")).failed == 0
    from recommender.browse import duplicate_clusters, sort_clusters

    store = open_store(cfg)
    try:
        facts = {"copy": sort_clusters(duplicate_clusters(store, tier="copy"), "size")}
    finally:
        store.close()
    for name, settings in (("brain", brain), ("dicom", dicom)):
        store = open_store(settings)
        try:
            facts[name] = [p for _, p, _ in store.scroll()]
        finally:
            store.close()
    return cfg, facts


@pytest.fixture(scope="module")
def server(home):
    cfg, facts = home
    with dashboard_server(cfg.home, cfg.collection, cfg.home.parent / "streamlit.log") as url:
        yield url, facts


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = os.environ.get("RECOMMENDER_SCREENSHOTS_DIR")
    out = Path(target) if target else tmp_path_factory.mktemp("workflow-shots")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM,
                              args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def pg(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 950}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    yield page
    context.close()


def _matching(pg) -> int:
    text = pg.get_by_text(re.compile(r"\d+ items match")).first
    text.wait_for()
    return int(re.match(r"(\d+) items match", text.inner_text()).group(1))


def _choose(pg, key: str, label: str) -> None:
    """Pick one option of a multiselect by the start of its label ('<value> (<count>)')."""
    pg.locator(f".st-key-{key} input").click()
    pg.get_by_role("option", name=re.compile(rf"^{re.escape(label)} \(\d+\)")).first.click()
    pg.keyboard.press("Escape")
    _settle(pg)


def test_analyst_filters_brain_mri_by_diagnosis_and_split(server, pg, shots):
    url, facts = server
    brain = facts["brain"]
    pg.goto(f"{url}/?page=Browse&collection=brain")
    _settle(pg)
    assert _matching(pg) == len(brain) == 4 * 2 * PER_GROUP
    _choose(pg, "browse_f_diagnosis", "glioma")
    assert _matching(pg) == sum(p["diagnosis"] == "glioma" for p in brain) == 2 * PER_GROUP
    _choose(pg, "browse_f_split", "test")
    want = sum(p["diagnosis"] == "glioma" and p["split"] == "test" for p in brain)
    assert _matching(pg) == want == PER_GROUP
    pg.locator("[data-testid='stImage'] img").nth(want - 1).wait_for()
    _shot(pg, shots, "browse_brain_filtered")
    pg.get_by_text(re.compile(r"^Export the \d+ matching items")).click()
    table = pd.read_csv(io.BytesIO(_download(pg, "browse_export_csv")))
    assert len(table) == want and set(table["diagnosis"]) == {"glioma"} and set(table["split"]) == {"test"}
    assert not table["relpath"].str.startswith("/").any()


def test_analyst_filters_dicom_by_series(server, pg, shots):
    url, facts = server
    dicom = facts["dicom"]
    dose = next(p for p in dicom if p.get("modality") == "RTDOSE")
    pg.goto(f"{url}/?page=Browse&collection=dicom")
    _settle(pg)
    assert _matching(pg) == len(dicom) == 1 + 1 + 15
    _choose(pg, "browse_f_series", dose["series"])
    assert _matching(pg) == sum(p.get("series") == dose["series"] for p in dicom) == 15
    _choose(pg, "browse_f_patient_id", dose["patient_id"])
    assert _matching(pg) == 15
    _shot(pg, shots, "browse_dicom_series")


def _tier(pg, tier: str) -> None:
    pg.locator(".st-key-dup_tier").get_by_text(tier, exact=True).click()
    _settle(pg)


def test_curator_records_decisions_reloads_and_exports_them(server, pg, shots):
    """On the largest copy cluster the real dedupe built: keep the canonical, discard the next member;
    after a reload both decisions are shown, and the decisions export and the delete list hold them."""
    url, facts = server
    cluster = facts["copy"][0]
    names = {m.path for m in cluster.members}
    pg.goto(f"{url}/?page=Duplicates&collection=planted")
    pg.get_by_text(re.compile(r"\d+ clusters")).first.wait_for()
    _settle(pg)
    _tier(pg, "copy")
    prefix = f"dup-{{}}-copy-{cluster.cluster_id}"
    pg.locator(f".st-key-{prefix.format('keep')}-0 button").first.click()
    _settle(pg)
    pg.locator(f".st-key-{prefix.format('discard')}-1 button").first.click()
    _settle(pg)

    pg.reload()
    pg.get_by_text(re.compile(r"\d+ clusters")).first.wait_for()
    _settle(pg)
    _tier(pg, "copy")
    assert pg.get_by_text("decision: keep").count() == 1 and pg.get_by_text("decision: discard").count() == 1
    _shot(pg, shots, "duplicates_decisions")

    table = pd.read_csv(io.BytesIO(_download(pg, "dup_decisions_csv")))
    assert sorted(table["decision"]) == ["discard", "keep"] and set(table["cluster_id"]) == {cluster.cluster_id}
    assert set(table["path"]) <= names
    deleted = _download(pg, "dup_delete_list").decode().splitlines()
    assert deleted == list(table.loc[table["decision"] == "discard", "path"])

    # compare the canonical with a member side by side
    pg.locator(f".st-key-dup-compare-copy-{cluster.cluster_id}").get_by_text("Compare side by side").click()
    pg.get_by_text(re.compile(r"mean absolute difference", re.I)).first.wait_for()
    _settle(pg)
    _shot(pg, shots, "duplicates_compare")
