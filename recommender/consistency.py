"""`recommender check`: compare the catalog with the collection, and optionally repair.

After a crash or a manual edit the two can disagree: points no file
references (orphans) and files whose points are missing. Repair deletes
orphans and forgets the files with missing points, so the next ingest
re-embeds them; nothing the source still has is lost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from recommender.catalog import Catalog
from recommender.locks import CollectionLock
from recommender.settings import Settings
from recommender.store import open_store


@dataclass
class CheckReport:
    """Differences between catalog and collection (and what repair did)."""

    collection: str
    points: int = 0
    catalog_points: int = 0
    orphan_points: list[str] = field(default_factory=list)
    files_missing_points: list[str] = field(default_factory=list)
    repaired: bool = False
    search: dict[str, Any] = field(default_factory=dict)  # how queries find candidates (VectorStore.search_info)

    @property
    def consistent(self) -> bool:
        return not self.orphan_points and not self.files_missing_points

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "consistent": self.consistent}


def check(settings: Settings, repair: bool = False) -> CheckReport:
    """Verify that every live catalog file has its points and every point has a file."""
    lock = CollectionLock(settings.home, settings.collection, "check").acquire(settings.lock_timeout)
    store = open_store(settings)
    catalog = Catalog(settings.catalog_path)
    try:
        stored = {pid for pid, _, _ in store.scroll(batch=1024)} if store.exists() else set()
        expected = catalog.point_ids(settings.collection)
        report = CheckReport(settings.collection, len(stored), len(expected), search=store.search_info())
        report.orphan_points = sorted(stored - expected)
        missing = expected - stored
        files = catalog.files(settings.collection)
        report.files_missing_points = sorted(
            p for p, r in files.items() if r.status in ("ok", "duplicate") and missing.intersection(r.point_ids)
        )
        if repair and not report.consistent:
            store.delete(report.orphan_points)
            catalog.remove_files(settings.collection, report.files_missing_points)
            report.repaired = True
        return report
    finally:
        store.close()
        catalog.close()
        lock.release()
