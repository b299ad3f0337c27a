"""The cut-out pictures of a collection's framed points, kept beside the store across ingest runs.

A page or a slide is found as a copy of the painting it shows through the picture cut out of its
template (`DedupEngine.cut_outs`): the model sees the page as a page. A painting that arrives after
its page must meet that cut-out, and within one run the engine still holds it; a later run would have
to cut every stored page out again. So each run keeps the cut-outs it made here, one file per
collection under the data home (point ids and unit vectors, float16, with the model that made them),
and the next run reads them once, when its first batch asks. A point deleted since is skipped by the
caller, which reads every match back from the store; a file made by another model is ignored.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from recommender.settings import Settings

log = logging.getLogger(__name__)


def cut_outs_path(settings: Settings) -> Path:
    """Where a collection's cut-outs are kept (under the data home, beside its map layouts)."""
    return settings.home / "cut_outs" / f"{settings.collection}.npz"


class StoredCutOuts:
    """(point id, unit vector) of the collection's framed points, loaded on first use, saved by `save`."""

    def __init__(self, settings: Settings):
        self.path = cut_outs_path(settings)
        self.model = settings.model
        self.ids: list[str] = []
        self._rows: list[np.ndarray] = []
        self._known: dict[str, int] = {}
        self._loaded = False
        self._dirty = False
        self._stacked: np.ndarray | None = None  # `matrix`, until the next `add`

    def matrix(self) -> tuple[list[str], np.ndarray]:
        """The ids and the vectors as rows (float32), the file's and this run's."""
        self._load()
        if not self._rows:
            return [], np.zeros((0, 1), np.float32)
        if self._stacked is None:
            self._stacked = np.stack(self._rows).astype(np.float32)
        return list(self.ids), self._stacked

    def add(self, ids: Sequence[str], vectors: Sequence[np.ndarray]) -> None:
        """This run's cut-outs (a point cut out again replaces its row)."""
        self._load()
        for pid, vec in zip(ids, vectors):
            row = np.asarray(vec, np.float16)
            if pid in self._known:
                self._rows[self._known[pid]] = row
            else:
                self._known[pid] = len(self.ids)
                self.ids.append(pid)
                self._rows.append(row)
            self._dirty = True
            self._stacked = None

    def save(self) -> None:
        """Write the file when this run added to it (whole, then renamed: a killed run leaves the last one)."""
        if not self._dirty:
            return
        tmp = self.path.with_suffix(".tmp.npz")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(tmp, ids=np.array(self.ids, dtype=str), vectors=np.stack(self._rows), model=np.array(self.model))
            os.replace(tmp, self.path)
        except OSError as exc:  # a full or read-only disk costs later runs the reverse search, not this run
            log.warning("could not keep the cut-outs of framed items in %s (%s): a painting ingested in a later "
                        "run will not be matched to the pages of this one until `recommender dedupe` runs", self.path, exc)
            return
        self._dirty = False

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if not self.path.is_file():
            return
        try:
            with np.load(self.path) as data:
                if str(data["model"]) != self.model:
                    return  # made by another model: another vector space
                ids, vectors = data["ids"].tolist(), data["vectors"]
        except (OSError, ValueError, KeyError):
            return  # unreadable: the next save writes it anew, and only the reverse search is lost meanwhile
        for pid, row in zip(ids, vectors):
            self._known[pid] = len(self.ids)
            self.ids.append(pid)
            self._rows.append(row)
