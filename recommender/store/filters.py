"""Filter specs: the plain dicts every caller passes, validated and turned into Qdrant filters.

Apart from the store classes so each backend (qdrant_client, edge) translates the same
`models.Filter` and no backend re-implements the validation rules.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from qdrant_client import models

from recommender.errors import ConfigError


RANGE_KEYS = ("gt", "gte", "lt", "lte")


def query_filter(spec: dict[str, Any] | None, exclude_ids: Sequence[str] = ()) -> models.Filter | None:
    """A Qdrant filter from a plain spec, validated with messages naming the field.

    `{"genre": "Landscape"}` equality; `{"genre": ["Landscape", "Portrait"]}` any of;
    `{"year": {"gte": 1800, "lt": 1900}}` numeric range. All conditions must hold.
    """
    conditions: list[Any] = []
    for key, value in validate_filter_spec(spec).items():
        if isinstance(value, dict):
            conditions.append(models.FieldCondition(key=key, range=models.Range(**value)))
        elif isinstance(value, list):
            conditions.append(models.FieldCondition(key=key, match=models.MatchAny(any=value)))
        else:
            conditions.append(models.FieldCondition(key=key, match=models.MatchValue(value=value)))
    must_not = [models.HasIdCondition(has_id=list(exclude_ids))] if exclude_ids else None
    if not conditions and not must_not:
        return None
    return models.Filter(must=conditions or None, must_not=must_not)


_INT64 = (-(2**63), 2**63 - 1)


def _check_int(key: str, value: Any) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64[0] <= value <= _INT64[1]:
        raise ConfigError(f"Filter '{key}': {value} is out of range; integers must fit in 64 bits.")


def validate_filter_spec(spec: dict[str, Any] | None) -> dict[str, Any]:
    """Normalise a filter spec or raise ConfigError saying which field is wrong and how to fix it."""
    out: dict[str, Any] = {}
    for key, value in (spec or {}).items():
        for v in (value if isinstance(value, (list, tuple, set)) else [value]):
            _check_int(key, v)
        if not isinstance(key, str) or not key:
            raise ConfigError(f"Filter field name {key!r} must be a non-empty string.")
        if isinstance(value, dict):
            bad = [k for k in value if k not in RANGE_KEYS]
            if bad or not value:
                raise ConfigError(f"Filter '{key}': a range takes gt/gte/lt/lte, got {sorted(value) or 'nothing'}.")
            for op, bound in value.items():
                if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                    raise ConfigError(f"Filter '{key}': range bound {op}={bound!r} must be a number.")
            out[key] = {k: float(v) for k, v in value.items()}
        elif isinstance(value, (list, tuple, set)):
            values = list(value)
            if not values:
                raise ConfigError(f"Filter '{key}': an any-of list needs at least one value.")
            kinds = {type(v) for v in values}
            if not (kinds <= {str} or kinds <= {int}):
                raise ConfigError(f"Filter '{key}': any-of values must be all strings or all integers, got {values!r}.")
            out[key] = values
        elif isinstance(value, (str, int, bool)):
            out[key] = value
        else:
            raise ConfigError(
                f"Filter '{key}': {value!r} can't be matched exactly; use a string, integer or boolean, "
                "a list for any-of, or {'gte': .., 'lte': ..} for a numeric range."
            )
    return out


def _query_input(query: Any, negative: Sequence[Any]) -> Any:
    """Plain nearest query for one positive; best-score recommend for examples."""
    positives = list(query) if isinstance(query, (list, tuple)) else [query]
    if not positives:
        raise ConfigError("A query needs at least one positive example (an item id or a vector).")
    as_input = [p.tolist() if isinstance(p, np.ndarray) else p for p in positives]
    if len(as_input) == 1 and not negative:
        return as_input[0]
    return models.RecommendQuery(recommend=models.RecommendInput(
        positive=as_input, negative=[n.tolist() if isinstance(n, np.ndarray) else n for n in negative],
        strategy=models.RecommendStrategy.BEST_SCORE,
    ))


def payload_filter(must: dict[str, Any] | None = None, has: Sequence[str] = ()) -> models.Filter | None:
    """`query_filter` (equality, any-of, ranges) plus fields that must be present and non-empty."""
    base = query_filter(must)
    must_not = [models.IsEmptyCondition(is_empty=models.PayloadField(key=k)) for k in has]
    if not must_not:
        return base
    return models.Filter(must=base.must if base else None, must_not=must_not)
