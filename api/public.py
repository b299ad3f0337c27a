"""What the API shows of server paths: each file relative to the folder it was ingested from.

Why: an absolute path tells every client the server's layout and means nothing on the client's
machine, while the path under the corpus root is what the user's own metadata table, corpus copy
and delete scripts use. The store keeps absolute paths (the pipeline reads files by them); only
responses are rewritten, here, in one place.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any, Iterable

from recommender import payload as P


def _roots(roots: Iterable[str | None]) -> list[str]:
    """Known corpus roots, longest first, so a nested root wins over its parent."""
    return sorted({str(r).rstrip("/") for r in roots if r}, key=len, reverse=True)


def relative(value: Any, roots: Iterable[str | None]) -> Any:
    """`value` with every string under one of `roots` made relative to it, and a root itself shown by its
    folder name (recursing into lists and dicts)."""
    ordered = _roots(roots)
    return _walk(value, ordered) if ordered else value


def _walk(value: Any, roots: list[str]) -> Any:
    if isinstance(value, str):
        for root in roots:
            if value == root:  # the root itself: its folder name, as `source` shows it
                return source_name(root)
            if value.startswith(root + "/"):
                return value[len(root) + 1:]
        return value
    if isinstance(value, dict):
        return {k: _walk(v, roots) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_walk(v, roots) for v in value]
    return value


def source_name(source: Any) -> Any:
    """A corpus root as clients see it: its folder name."""
    return PurePosixPath(str(source)).name if source else source


def public_payload(payload: dict[str, Any], roots: Iterable[str | None] = ()) -> dict[str, Any]:
    """A stored payload with `path` (and its copies' paths) relative to the corpus root and `source`
    reduced to the root's folder name."""
    out = relative(payload, [payload.get(P.SOURCE), *roots])
    if P.SOURCE in out:
        out[P.SOURCE] = source_name(out[P.SOURCE])
    for copy in out.get(P.COPIES) or []:
        if isinstance(copy, dict) and P.SOURCE in copy:
            copy[P.SOURCE] = source_name(copy[P.SOURCE])
    return out


def public_result(result: dict[str, Any]) -> dict[str, Any]:
    """A query result (`Result.to_dict()`) with its path and payload made public."""
    payload = result.get("payload") or {}
    roots = [payload.get(P.SOURCE)]
    return {**result, "path": relative(result.get("path", ""), roots), "payload": public_payload(payload)}


def public_run(run: dict[str, Any]) -> dict[str, Any]:
    """A catalog run with its report's paths relative to the run's source and the source as a name."""
    out = relative(run, [run.get("source")])
    out["source"] = source_name(run.get("source"))
    return out
