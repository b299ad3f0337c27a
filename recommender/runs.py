"""The run history as a reader should see it: a run the catalog still calls 'running' whose
process is gone (killed, machine restarted) shows as 'interrupted', never 'running' forever.

The next writer marks such runs in the catalog itself (`Catalog.interrupt_runs`); until one
starts, readers (dashboard, API) tell from the collection lock's holder file: a clean run removes
it when it releases the lock, a killed one leaves it naming a dead process.
"""

from __future__ import annotations

from typing import Any

from recommender.catalog import Catalog
from recommender.locks import CollectionLock, holder_alive
from recommender.settings import Settings


def run_history(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """Most recent runs of the configured collection first, with live status."""
    catalog = Catalog(settings.catalog_path)
    try:
        runs = catalog.runs(settings.collection, limit=limit)
    finally:
        catalog.close()
    holder = CollectionLock(settings.home, settings.collection).holder()
    if holder is None or holder_alive(holder) is False:
        for run in runs:
            if run["status"] == "running":
                run["status"] = "interrupted"
    return runs
