"""Request and response bodies of the REST API (they are also its OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, Field


class ResultOut(BaseModel):
    """One result: the point, its score, its payload and why it was returned."""

    id: str
    path: str
    score: float
    payload: dict[str, Any]
    reason: dict[str, Any]


class QueryOptions(BaseModel):
    """Options shared by every query kind."""

    k: int = Field(10, ge=1, le=1000, description="Number of results.")
    offset: int = Field(0, ge=0, le=100_000, description="Skip this many results (paging).")
    filters: dict[str, Any] = Field(default_factory=dict, description=(
        "Payload filter: {field: value} equality, {field: [a, b]} any of, {field: {gte: 1, lt: 5}} numeric range."))
    group_by: Optional[str] = Field(None, description="At most group_size results per value of this payload field.")
    group_size: int = Field(1, ge=1, le=100)
    mmr_lambda: Optional[float] = Field(None, ge=0.0, le=1.0, description="Diversity: 1 = pure relevance, lower = more diverse.")
    score_threshold: Optional[float] = Field(None, description="Only results scoring above this.")
    collapse_duplicates: bool = Field(True, description="One result per duplicate cluster; none from the query's own cluster.")


class RecommendIn(QueryOptions):
    """Examples to move towards (positive) and away from (negative), by id or ingested path; optional text."""

    positive: list[str] = Field(default_factory=list, max_length=100)
    negative: list[str] = Field(default_factory=list, max_length=100)
    text: Optional[str] = Field(None, max_length=1000, description="A text query (CLIP collections only).")
