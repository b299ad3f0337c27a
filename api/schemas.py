"""Request and response bodies of the REST API (they are also its OpenAPI schema).

The filter type bounds what JSON a filter may hold (scalars, one list or one range per
field, 64-bit integers, finite numbers) so nested or out-of-range input is a 422 naming
the field here, at the edge; what the values mean (field names, range keys, any-of
kinds) stays with the library (`recommender.store.filters`), which answers ConfigError.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, WithJsonSchema

from recommender.feedback import SESSION_PATTERN

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_FILTER_FIELDS = 32
MAX_ANY_OF = 1000
MAX_TEXT = 1000
FILTER_SHAPE = ("a filter value is a string, number or boolean, a list of them (any of), "
                "or an object of gt/gte/lt/lte bounds (a range); nothing nested deeper")

_SCALAR_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "maxLength": MAX_TEXT}, {"type": "integer", "minimum": INT64_MIN, "maximum": INT64_MAX},
    {"type": "number"}, {"type": "boolean"}]}
_VALUE_SCHEMA: dict[str, Any] = {"anyOf": [
    _SCALAR_SCHEMA, {"type": "array", "items": _SCALAR_SCHEMA, "maxItems": MAX_ANY_OF},
    {"type": "object", "additionalProperties": _SCALAR_SCHEMA, "maxProperties": 4}]}


def _check_scalar(value: Any) -> None:
    """Refuse what no payload value can be: containers, non-finite numbers, integers beyond 64 bits."""
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValueError(f"a string value is longer than {MAX_TEXT} characters")
    elif isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError("an integer value is outside the 64-bit range")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("a number must be finite (no NaN or Infinity)")
    else:
        raise ValueError(f"got {type(value).__name__}: {FILTER_SHAPE}")


def _filter_value(value: Any) -> Any:
    """One filter value, at most one level deep (a list or a range object) and within range.

    Bounded here, at the HTTP edge, so nested or out-of-range JSON is a 422 naming the field;
    what the value means (range keys, any-of kinds, field names) the library decides."""
    if isinstance(value, list):
        if len(value) > MAX_ANY_OF:
            raise ValueError(f"an any-of list holds at most {MAX_ANY_OF} values")
        items = value
    elif isinstance(value, dict):
        if len(value) > 4:
            raise ValueError("a range takes at most the four bounds gt, gte, lt, lte")
        items = list(value.values())
    else:
        items = [value]
    for item in items:
        _check_scalar(item)
    return value


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
FilterValue = Annotated[Any, AfterValidator(_filter_value), WithJsonSchema(_VALUE_SCHEMA)]
Filters = Annotated[dict[Annotated[str, Field(min_length=1, max_length=200)], FilterValue],
                    Field(max_length=MAX_FILTER_FIELDS)]
FILTERS: TypeAdapter[dict[str, Any]] = TypeAdapter(Filters)  # the query-string form (JSON text), as the body form

ItemRef = Annotated[str, Field(min_length=1, max_length=4096,
                               description="A point id (UUID or integer) or the path of an ingested file.")]


class ResultOut(BaseModel):
    """One result: the point, its score, its payload and why it was returned."""

    id: str
    path: str
    score: float
    payload: dict[str, Any]
    reason: dict[str, Any]


class ItemOut(BaseModel):
    """One stored item: its id and payload."""

    id: str
    payload: dict[str, Any]


class ItemsOut(BaseModel):
    """One page of stored items: `total` items match the filter; pass `next` as `cursor` for the
    following page (null on the last one)."""

    items: list[ItemOut]
    total: int
    limit: int
    next: Optional[str] = None


class HealthOut(BaseModel):
    """Liveness plus what is being served."""

    status: str
    collection: str
    model: str
    engine: str
    points: int


class ErrorItem(BaseModel):
    """One invalid parameter: where it is (query/path/body, then the field) and what is wrong."""

    loc: list[Union[str, int]]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every 4xx/5xx body, an RFC 9457 problem document (application/problem+json): `detail` is a
    sentence naming the field or file and what to do; `errors` lists each invalid parameter."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: Optional[str] = None
    errors: Optional[list[ErrorItem]] = None


class QueryOptions(BaseModel):
    """Options shared by every query kind."""

    k: int = Field(10, ge=1, le=1000, description="Number of results.")
    offset: int = Field(0, ge=0, le=100_000, description="Skip this many results (paging).")
    filters: Filters = Field(default_factory=dict, description=(
        "Payload filter: {field: value} equality, {field: [a, b]} any of, {field: {gte: 1, lt: 5}} numeric range."))
    group_by: Optional[str] = Field(None, min_length=1, max_length=200,
                                    description="At most group_size results per value of this payload field.")
    group_size: int = Field(1, ge=1, le=100)
    mmr_lambda: Optional[float] = Field(None, ge=0.0, le=1.0, description="Diversity: 1 = pure relevance, lower = more diverse.")
    score_threshold: Optional[FiniteFloat] = Field(None, description="Only results scoring above this.")
    collapse_duplicates: bool = Field(True, description="One result per duplicate cluster; none from the query's own cluster.")
    session: Optional[str] = Field(None, pattern=SESSION_PATTERN, description=(
        "Feedback session: its likes join the query as positive examples, its dislikes as negative ones."))


class RecommendIn(QueryOptions):
    """Examples to move towards (positive) and away from (negative), by id or ingested path; optional text."""

    positive: list[ItemRef] = Field(default_factory=list, max_length=100)
    negative: list[ItemRef] = Field(default_factory=list, max_length=100)
    text: Optional[str] = Field(None, max_length=MAX_TEXT, description="A text query (CLIP collections only).")


class FeedbackIn(BaseModel):
    """One mark on one item: like, dislike, or clear (take the item's mark away)."""

    mark: Literal["like", "dislike", "clear"]


class FeedbackOut(BaseModel):
    """A feedback session's marks after the change (ids, oldest first), and the item an undo took back."""

    session: str
    likes: list[str]
    dislikes: list[str]
    undone: Optional[str] = None


class DecisionIn(BaseModel):
    """A curator's decision on one member file of a duplicate cluster."""

    item_id: str = Field(..., description="The member's point id.")
    path: Optional[str] = Field(None, max_length=4096, description=(
        "Which of the point's files (a byte-identical copy shares its point); default: the point's own file."))
    decision: Literal["keep", "discard", "not_duplicate", "undecided"]


class DecisionOut(BaseModel):
    """One file's current decision."""

    cluster_id: str
    point_id: str
    path: str
    decision: str
    decided_at: str


class MemberOut(BaseModel):
    """One file of a duplicate cluster (a byte-identical copy shares its point's id)."""

    id: str
    path: str = Field(..., description="Relative to the corpus root it was ingested from.")
    name: str
    tier: Optional[str] = None
    canonical: bool
    score: Optional[float] = Field(None, description="Cosine to the cluster's canonical member.")
    byte_copy: bool = False
    decision: Optional[str] = Field(None, description="The curator's decision on this file, if any.")


class ClusterOut(BaseModel):
    """A duplicate cluster, canonical member first."""

    cluster_id: str
    tier: Optional[str] = None
    size: int
    score: Optional[float] = Field(None, description="Lowest member cosine to the canonical (the weakest link).")
    members: list[MemberOut]


class PairOut(BaseModel):
    """A (canonical, member) pair of a cluster."""

    cluster_id: str
    tier: Optional[str] = None
    canonical_id: str
    canonical_path: str
    id: str
    path: str
    score: Optional[float] = None


class DuplicatesOut(BaseModel):
    """One page of duplicate clusters: `total` clusters match; pass `next` as `cursor` for the next page."""

    clusters: list[ClusterOut]
    pairs: list[PairOut]
    total: int
    limit: int
    next: Optional[str] = None


class RunOut(BaseModel):
    """One ingest or dedupe run: status (running, done, failed, interrupted), times and its report."""

    run_id: str
    collection: str
    source: Optional[str] = Field(None, description="Name of the folder ingested.")
    model: Optional[str] = None
    status: Optional[str] = None
    started_at: Optional[float] = Field(None, description="Unix seconds.")
    finished_at: Optional[float] = None
    started: Optional[str] = Field(None, description="ISO 8601, UTC.")
    finished: Optional[str] = None
    report: Optional[dict[str, Any]] = None
