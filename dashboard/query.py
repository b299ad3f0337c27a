"""The Similar page's query: seed item plus liked/disliked examples, filters,
one-per-group and diversity, answered by `Recommender.recommend`."""

from __future__ import annotations

from typing import Any, Mapping

from recommender.recommend import Recommender, Result


def similar(rec: Recommender, item: str, k: int = 12, filters: Mapping[str, Any] | None = None,
            session: str | None = None, group_by: str | None = None, diversity: float = 0.0) -> list[Result]:
    """k results for the seed item refined by the feedback session's likes and dislikes (empty filter
    values are ignored)."""
    filters = {k_: v for k_, v in (filters or {}).items() if v not in (None, "")}
    return rec.recommend(positive=[item], k=k, filters=filters, session=session,
                         group_by=group_by or None, diversity=diversity)
