"""REST API over the `Recommender` (FastAPI; OpenAPI docs at /docs).

`create_app(settings)` builds the app; `recommender serve` (cli/apps.py) runs it with uvicorn.
Errors are mapped to status codes a client can act on, each body an `ErrorOut` whose
`detail` names the field or file: malformed body 400, unknown item 404, slow upload 408,
upload or its decode too large 413, not an image 415, invalid parameters 422 (an unknown
filter or group-by field lists the fields that exist), a store in use by another process
or all decode slots busy 503 with `Retry-After`. Thumbnails are served by point id only:
the file path is looked up in the store, so no request can name an arbitrary file.

Memory per request is bounded: an upload's body is counted while it streams (Content-Length
checked first, nothing read past the limit), its decode is refused above
`max_decoded_bytes` before any pixel exists (`recommender.decode`), and at most
`max_concurrent_decodes` uploads and thumbnails decode at once.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from http import HTTPStatus
from typing import Any, Awaitable, Callable, Mapping, Optional

from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.security import APIKeyHeader
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.responses import JSONResponse, Response
from PIL import Image
from pydantic import ValidationError

from api.schemas import (FILTERS, DecisionIn, DecisionOut, DuplicatesOut, ErrorOut, FeedbackIn, FeedbackOut, HealthOut,
                         ItemOut, ItemsOut, QueryOptions, RecommendIn, ResultOut, RunOut)
from api.public import public_payload, public_result, public_run, relative
from recommender import payload as P
from recommender.browse import cluster_score
from recommender.catalog import Catalog
from recommender.decode import DecodeError, DecodeLimitError, DecodeOptions, decode_file
from recommender.errors import NotFoundError, RecommenderError, StoreLockedError
from recommender.feedback import SESSION_PATTERN
from recommender.recommend import Recommender, Result
from recommender.settings import Settings, get_settings

THUMBNAIL_MAX = 1024
MAX_CONCURRENT_DECODES = 2  # each may hold up to settings.max_decoded_bytes
UPLOAD_READ_TIMEOUT_S = 15.0  # longest wait for the next piece of an upload body
UPLOAD_DEADLINE_S = 120.0  # the whole upload body must arrive within this
THUMBNAIL_WAIT_S = 10.0  # a thumbnail waits this long for a decode slot (a page asks for many at once)
RETRY_AFTER_S = 2
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and the small form fields around the file
UPLOAD_PATHS = frozenset({"/search", "/similar/image"})
MAX_POINT_ID = 2**64 - 1
PROBLEM_JSON = "application/problem+json"
SESSION_HELP = "Feedback session (a user name, say): its likes and dislikes join the query as examples."

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def _iso(t: Any) -> str | None:
    """A catalog timestamp (Unix seconds) as ISO 8601 in UTC, for people and for clients alike."""
    from datetime import datetime, timezone

    return None if t is None else datetime.fromtimestamp(float(t), timezone.utc).isoformat(timespec="seconds")


def _cluster_out(cluster: Any, decided: Mapping[tuple[str, str], str]) -> dict[str, Any]:
    return {"cluster_id": cluster.cluster_id, "tier": cluster.tier, "size": len(cluster.members),
            "score": cluster_score(cluster),
            "members": [{"id": m.id, "path": m.path, "name": m.name, "tier": m.tier, "canonical": m.canonical,
                         "score": m.score, "byte_copy": m.byte_copy, "decision": decided.get((m.id, m.path))}
                        for m in cluster.members]}


def _pairs_out(clusters: list) -> list[dict[str, Any]]:
    """(canonical, member) pairs: what a curator or a script checks one by one."""
    out = []
    for c in clusters:
        canon = c.canonical
        for m in c.members:
            if canon is not None and m is not canon:
                out.append({"cluster_id": c.cluster_id, "tier": m.tier or c.tier, "canonical_id": canon.id,
                            "canonical_path": canon.path, "id": m.id, "path": m.path, "score": m.score})
    return out


def _out(results: list[Result]) -> list[dict[str, Any]]:
    return [public_result(r.to_dict()) for r in results]


def _errors(*codes: int, auth: bool = True) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error codes (and 401, which any endpoint behind the API key may
    answer): every error body is an ErrorOut."""
    schema = {"schema": {"$ref": "#/components/schemas/ErrorOut"}}
    return {code: {"model": ErrorOut, "content": {PROBLEM_JSON: schema}} for code in (*codes, *((401,) if auth else ()))}


def _too_large(limit: int) -> str:
    return f"Upload is larger than the {limit:,}-byte limit (RECOMMENDER_MAX_UPLOAD_BYTES); send a smaller image."


class DecodeGate:
    """At most `slots` uploads/decodes at once, so decode memory is bounded by slots x max_decoded_bytes."""

    def __init__(self, slots: int) -> None:
        self._sem = threading.BoundedSemaphore(slots)
        self.slots = slots

    def try_enter(self, wait: float = 0.0) -> bool:
        """Take a slot, waiting at most `wait` seconds; False when all stay busy."""
        return self._sem.acquire(timeout=wait) if wait > 0 else self._sem.acquire(blocking=False)

    def leave(self) -> None:
        self._sem.release()

    def busy(self) -> HTTPException:
        """The 503 a request gets when no slot frees in time."""
        return HTTPException(503, f"All {self.slots} image decode slots are busy; retry after {RETRY_AFTER_S} s.",
                             headers={"Retry-After": str(RETRY_AFTER_S)})


async def _send_error(send: Callable[[dict], Awaitable[None]], exc: HTTPException) -> None:
    """Answer an ErrorOut straight from the middleware (the app never sees the request)."""
    body = json.dumps(problem_body(exc.status_code, str(exc.detail))).encode()
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class UploadGuard:
    """ASGI middleware for upload routes: the body limit and timeouts are enforced while the body streams.

    FastAPI parses a multipart form whole (spooling it to disk) before the endpoint can look at
    the file, so the limit has to sit below it: a declared Content-Length over the limit is
    refused unread, a chunked body is counted and refused as soon as it passes the limit, a
    body that stalls or dribbles gets 408, and a request that finds every decode slot busy
    gets 503 with Retry-After before any of its body is read."""

    def __init__(self, app: ASGIApp, *, max_body: int, limit: int, gate: DecodeGate,
                 read_timeout: float, deadline: float, paths: frozenset[str] = UPLOAD_PATHS) -> None:
        self.app, self.max_body, self.limit, self.gate = app, max_body, limit, gate
        self.read_timeout, self.deadline, self.paths = read_timeout, deadline, paths

    async def __call__(self, scope: dict, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        refusal = self._refuse_headers(scope)
        if refusal is None and not self.gate.try_enter():
            refusal = self.gate.busy()
        if refusal is not None:
            await _send_error(send, refusal)
            return
        try:
            await self.app(scope, self._bounded(receive), send)
        finally:
            self.gate.leave()

    def _refuse_headers(self, scope: dict) -> HTTPException | None:
        """413 for a declared Content-Length over the limit, 400 for one that is not a number."""
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is None:
            return None
        if not declared.strip().isdigit():
            return HTTPException(400, "Content-Length header is not a whole number of bytes; send a valid one.")
        return HTTPException(413, _too_large(self.limit)) if int(declared) > self.max_body else None

    def _bounded(self, receive: Callable[[], Awaitable[dict]]) -> Callable[[], Awaitable[dict]]:
        """`receive` that counts body bytes and times out; raising HTTPException makes FastAPI answer it."""
        seen, done = 0, False
        deadline = time.monotonic() + self.deadline

        async def bounded() -> dict:
            nonlocal seen, done
            if done:  # body complete: later receives wait for a disconnect, untimed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.read_timeout, deadline - time.monotonic())))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"Upload body did not arrive in time (nothing for {self.read_timeout:g} s, or "
                                         f"not complete within {self.deadline:g} s); retry on a faster connection.") from None
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > self.max_body:
                    raise HTTPException(413, _too_large(self.limit))
            return message

        return bounded


def _field(loc: tuple | list) -> str:
    """'query parameter k', 'body field filters.genre': where a validation error is, in words."""
    where, rest = (loc[0], loc[1:]) if loc and loc[0] in ("query", "path", "body", "header", "form") else ("", loc)
    name = ".".join(str(part) for part in rest)
    kind = {"query": "query parameter", "path": "path parameter", "header": "header", "": "field"}.get(where, "body field")
    return f"{kind} '{name}'" if name else f"the request {where or 'body'}"


def problem_body(status: int, detail: str, instance: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    """An RFC 9457 problem document: `detail` says what was wrong and what to do."""
    return {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail,
            **({"instance": instance} if instance else {}), **extra}


def problem(status: int, detail: str, instance: Optional[str] = None, headers: Optional[Mapping[str, str]] = None,
            **extra: Any) -> JSONResponse:
    """Every error answer: application/problem+json (RFC 9457), the same shape from each handler."""
    return JSONResponse(problem_body(status, detail, instance, **extra), status_code=status,
                        headers=dict(headers or {}), media_type=PROBLEM_JSON)


def _validation_response(errors: list[dict[str, Any]], instance: Optional[str] = None) -> JSONResponse:
    """422 whose detail names each invalid field in a sentence; `errors` keeps the structured list."""
    items = [{"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
              "type": str(e.get("type", ""))} for e in errors]
    parts = [f"{_field(i['loc'])}: {i['msg']}" for i in items[:5]]
    more = f" (and {len(items) - 5} more)" if len(items) > 5 else ""
    return problem(422, "Invalid request: " + "; ".join(parts) + more, instance, errors=items)


def _invalid(exc: ValidationError, prefix: tuple[str, ...]) -> RequestValidationError:
    """A pydantic error raised inside an endpoint, as the 422 FastAPI gives for its own parameters."""
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in exc.errors(include_input=False)])


def _query_options(where: str, **values: Any) -> QueryOptions:
    try:
        return QueryOptions(**values)
    except ValidationError as exc:
        raise _invalid(exc, (where,)) from None


def filters_param(raw: Optional[str], where: str = "query") -> dict[str, Any]:
    """The `filters` query/form parameter: JSON text of a filter object, bounded as in a JSON body."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, over-long integers, deep nesting
        msg = getattr(exc, "msg", None) or type(exc).__name__
        raise HTTPException(422, f"filters is not JSON ({msg}); e.g. filters={{\"genre\":\"Landscape\"}}") from None
    if not isinstance(value, dict):
        raise HTTPException(422, "filters must be a JSON object of field -> value / [values] / {gte, lte}.")
    try:
        return FILTERS.validate_python(value)
    except ValidationError as exc:
        raise _invalid(exc, (where, "filters")) from None


def _cursor(cursor: Optional[str]) -> Optional[str]:
    """A page cursor is the id of the page's first item, as `next` returned it."""
    if not cursor:
        return None
    try:
        return str(uuid.UUID(cursor))
    except ValueError:
        raise HTTPException(422, f"query parameter 'cursor': '{cursor[:64]}' is not a cursor; pass the `next` "
                                 "value of the previous page.") from None


def _valid_id(item_id: str) -> str:
    """Point ids are UUIDs; anything else (a path, '..') is rejected with 422.

    Qdrant would also take an unsigned integer, but every point this library writes has a
    UUID (`recommender.store.point_id_for`), so an integer names no item: 404."""
    if item_id.isascii() and item_id.isdigit() and int(item_id) <= MAX_POINT_ID:
        raise NotFoundError(f"No item with id '{item_id}': item ids are UUIDs (see /items/{{id}}/similar results).")
    try:
        return str(uuid.UUID(item_id))
    except ValueError:
        shown = item_id if len(item_id) <= 80 else item_id[:80] + "..."
        raise HTTPException(422, f"path parameter 'item_id': '{shown}' is not an item id (a UUID or an integer).") from None


OPEN_PATHS = frozenset({"/health", "/docs", "/redoc", "/openapi.json"})  # no data behind them
_API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False,
                        description="The server's RECOMMENDER_API_KEY (needed only when it is set).")


def _key_check(expected: Optional[str]) -> Callable[..., None]:
    """The dependency every endpoint runs: with an API key configured, a request without the key (or
    with another) is 401, except /health and the API's own documentation."""

    def check(request: Request, key: Optional[str] = Depends(_API_KEY)) -> None:
        if expected is None or request.url.path in OPEN_PATHS:
            return
        if key is None or not secrets.compare_digest(key.encode(), expected.encode()):
            raise HTTPException(401, "Missing or wrong API key: send it in the X-API-Key header "
                                     "(the server's RECOMMENDER_API_KEY).", headers={"WWW-Authenticate": "X-API-Key"})

    return check


def _install_offline_docs(app: FastAPI) -> None:
    """Swagger UI at /docs and ReDoc at /redoc from assets the API serves itself (the `fastapi-offline`
    package's copies), not from a CDN: the docs work on a machine without internet."""
    from importlib.resources import files

    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    assets = "/docs-assets"
    app.mount(assets, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def swagger() -> Response:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} - API docs",
                                   swagger_js_url=f"{assets}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{assets}/swagger-ui.css", swagger_favicon_url=f"{assets}/favicon.png")

    @app.get("/redoc", include_in_schema=False)
    def redoc() -> Response:
        return get_redoc_html(openapi_url=app.openapi_url, title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{assets}/redoc.standalone.js", redoc_favicon_url=f"{assets}/favicon.png",
                              with_google_fonts=False)


def _install_error_handlers(app: FastAPI) -> None:
    """Library errors -> status codes, each body an ErrorOut."""

    @app.exception_handler(RequestValidationError)
    async def _bad_params(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_response(list(exc.errors()), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), request.url.path, headers=exc.headers)

    def answer(status: int, text: Callable[[Exception], str], headers: Optional[dict[str, str]] = None):
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return problem(status, text(exc), request.url.path, headers=headers)
        return handler

    app.add_exception_handler(NotFoundError, answer(404, str))
    app.add_exception_handler(StoreLockedError, answer(503, str, {"Retry-After": str(RETRY_AFTER_S)}))
    app.add_exception_handler(DecodeLimitError, answer(413, lambda e: f"Upload is too large to decode: {e.reason}"))
    app.add_exception_handler(DecodeError, answer(415, lambda e: f"Upload is not a readable image: {e.reason}"))
    app.add_exception_handler(RecommenderError, answer(422, str))


def _resolve_refs(r: Recommender, refs: list[str], field: str) -> list[str]:
    """Ids for the examples of /recommend, each unknown one a 404 naming the body field."""
    out = []
    for ref in refs:
        try:
            with r._lock:
                out.append(r.resolve(ref))
        except NotFoundError as exc:  # unknown id or path (resolve also turns over-long and '~user' names into this)
            raise NotFoundError(f"body field '{field}': '{ref[:80]}' is neither an item id nor an ingested file path "
                                f"({exc}).") from None
    return out


def create_app(settings: Settings | None = None, recommender: Recommender | None = None, *,
               max_concurrent_decodes: int = MAX_CONCURRENT_DECODES, read_timeout: float = UPLOAD_READ_TIMEOUT_S,
               upload_deadline: float = UPLOAD_DEADLINE_S) -> FastAPI:
    """The app; pass a `Recommender` to share an already open store (tests, embedding in another app)."""
    cfg = settings or get_settings()
    state: dict[str, Any] = {"rec": recommender}
    lock = threading.Lock()
    gate = DecodeGate(max_concurrent_decodes)

    def rec() -> Recommender:
        with lock:
            if state["rec"] is None:
                state["rec"] = Recommender(cfg)
                state["rec"].store.prefetch()
                state["owned"] = True
            return state["rec"]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if state.get("owned") and state["rec"] is not None:
            state["rec"].close()

    app = FastAPI(title="Image recommender", version="1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Similar images by item, upload, text or examples, with filters, grouping and diversity.",
                  dependencies=[Depends(_key_check(cfg.api_key))])
    _install_offline_docs(app)
    if cfg.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(UploadGuard, max_body=cfg.max_upload_bytes + FORM_OVERHEAD, limit=cfg.max_upload_bytes,
                       gate=gate, read_timeout=read_timeout, deadline=upload_deadline)
    _install_error_handlers(app)

    @app.get("/health", response_model=HealthOut, responses=_errors(503, auth=False))
    def health() -> dict[str, Any]:
        """Liveness plus what is being served."""
        r = rec()
        with r._lock:
            points = r.store.count()
        return {"status": "ok", "collection": cfg.collection, "model": r.model_name, "engine": r.engine, "points": points}

    @app.get("/items", response_model=ItemsOut, responses=_errors(422, 503))
    def items(limit: int = Query(24, ge=1, le=1000),
              cursor: Optional[str] = Query(None, max_length=64, description="`next` of the previous page."),
              filters: Optional[str] = Query(None, max_length=100_000,
                                             description="JSON object, e.g. {\"genre\": [\"Landscape\", \"Portrait\"]}")
              ) -> dict[str, Any]:
        """Stored items page by page, filtered like the queries, with the number that match."""
        from recommender.browse import browse_page

        spec = filters_param(filters)
        start = _cursor(cursor)
        r = rec()
        with r._lock:
            r.store.check_fields(spec, role="filter")
            page = browse_page(r.store, spec, limit, start)
        return {"items": [{"id": i.id, "payload": public_payload(i.payload)} for i in page.items], "total": page.total, "limit": limit,
                "next": None if page.next_offset is None else str(page.next_offset)}

    @app.get("/items/{item_id}", response_model=ItemOut, responses=_errors(404, 422, 503))
    def item(item_id: str) -> dict[str, Any]:
        """One item's payload."""
        r = rec()
        with r._lock:
            payload, _ = r.store.get(_valid_id(item_id))
        return {"id": item_id, "payload": public_payload(payload)}

    @app.get("/items/{item_id}/similar", response_model=list[ResultOut], responses=_errors(404, 422, 503))
    def similar(item_id: str, k: int = Query(10, ge=1, le=1000), offset: int = Query(0, ge=0, le=100_000),
                filters: Optional[str] = Query(None, max_length=100_000,
                                               description="JSON object, e.g. {\"genre\": \"Landscape\"}"),
                group_by: Optional[str] = Query(None, min_length=1, max_length=200),
                group_size: int = Query(1, ge=1, le=100),
                mmr_lambda: Optional[float] = Query(None, ge=0.0, le=1.0),
                score_threshold: Optional[float] = Query(None, allow_inf_nan=False),
                collapse_duplicates: bool = True,
                session: Optional[str] = Query(None, pattern=SESSION_PATTERN, description=SESSION_HELP)) -> list[dict[str, Any]]:
        """Items similar to a stored item."""
        q = _query_options("query", k=k, offset=offset, filters=filters_param(filters), group_by=group_by,
                           group_size=group_size, mmr_lambda=mmr_lambda, score_threshold=score_threshold,
                           collapse_duplicates=collapse_duplicates, session=session)
        return _out(rec().recommend([_valid_id(item_id)], **q.model_dump()))

    @app.post("/recommend", response_model=list[ResultOut], responses=_errors(400, 404, 422, 503))
    def recommend(body: RecommendIn) -> list[dict[str, Any]]:
        """Positive/negative examples (best-score strategy), optionally with a text."""
        r = rec()
        opts = body.model_dump(exclude={"positive", "negative", "text"})
        positive, negative = _resolve_refs(r, body.positive, "positive"), _resolve_refs(r, body.negative, "negative")
        return _out(r.recommend(positive, negative, text=body.text, **opts))

    @app.get("/search", response_model=list[ResultOut], responses=_errors(422, 503))
    def search_text(q: str = Query(..., min_length=1, max_length=1000), k: int = Query(10, ge=1, le=1000),
                    offset: int = Query(0, ge=0, le=100_000),
                    filters: Optional[str] = Query(None, max_length=100_000),
                    session: Optional[str] = Query(None, pattern=SESSION_PATTERN, description=SESSION_HELP)) -> list[dict[str, Any]]:
        """Items matching a text description (CLIP collections; others answer 422)."""
        return _out(rec().recommend(text=q, k=k, offset=offset, filters=filters_param(filters), session=session))

    async def _upload_query(file: Optional[UploadFile], text: Optional[str], q: QueryOptions) -> list[dict[str, Any]]:
        """Embed the upload (its body limited while it streams) and/or the text, then query."""
        r = rec()
        image = None
        if file is not None:
            limit = cfg.max_upload_bytes
            data = await file.read(limit + 1)
            if len(data) > limit:
                raise HTTPException(413, _too_large(limit))
            if not data:
                raise HTTPException(415, "Upload is empty; send an image file (JPEG, PNG, ...).")
            image = await run_in_threadpool(r.decode_image, data)
        return _out(await run_in_threadpool(r.recommend, image=image, text=text, **q.model_dump()))

    @app.post("/search", response_model=list[ResultOut], responses=_errors(400, 408, 413, 415, 422, 503))
    async def search(file: Optional[UploadFile] = File(None, description="An image (not stored)."),
                     text: Optional[str] = Form(None, min_length=1, max_length=1000,
                                                description="A text description (CLIP collections only)."),
                     k: int = Form(10, ge=1, le=1000), offset: int = Form(0, ge=0, le=100_000),
                     filters: Optional[str] = Form(None, max_length=100_000),
                     group_by: Optional[str] = Form(None, min_length=1, max_length=200),
                     group_size: int = Form(1, ge=1, le=100),
                     mmr_lambda: Optional[float] = Form(None, ge=0.0, le=1.0),
                     score_threshold: Optional[float] = Form(None, allow_inf_nan=False),
                     session: Optional[str] = Form(None, pattern=SESSION_PATTERN, description=SESSION_HELP)) -> list[dict[str, Any]]:
        """Items similar to an uploaded image (multipart field `file`), matching a text (field `text`,
        CLIP collections), or both at once."""
        if file is None and not text:
            raise HTTPException(422, "Send an image as form field 'file', a text as form field 'text', or both.")
        q = _query_options("body", k=k, offset=offset, filters=filters_param(filters, "body"), group_by=group_by,
                           group_size=group_size, mmr_lambda=mmr_lambda, score_threshold=score_threshold, session=session)
        return await _upload_query(file, text, q)

    # The older name of an image search (kept for existing clients): the same handler.
    app.post("/similar/image", response_model=list[ResultOut], deprecated=True, summary="Similar Image",
             responses=_errors(400, 408, 413, 415, 422, 503))(search)

    def _marks(session: str, undone: Optional[str] = None) -> dict[str, Any]:
        r = rec()
        return {"session": session, **r.feedback().examples(cfg.collection, session).as_dict(), "undone": undone}

    @app.get("/feedback/{session}", response_model=FeedbackOut, responses=_errors(422, 503))
    def feedback(session: str = PathParam(..., pattern=SESSION_PATTERN, description=SESSION_HELP)) -> dict[str, Any]:
        """A feedback session's likes and dislikes (the examples its queries add)."""
        return _marks(session)

    @app.put("/feedback/{session}/items/{item_id}", response_model=FeedbackOut, responses=_errors(400, 404, 422, 503))
    def mark(body: FeedbackIn, item_id: str, session: str = PathParam(..., pattern=SESSION_PATTERN, description=SESSION_HELP)) -> dict[str, Any]:
        """Like, dislike or clear one stored item in a session; its next queries use the marks."""
        r = rec()
        pid = _valid_id(item_id)
        with r._lock:
            r.store.get(pid)  # 404 for an item that is not stored
        r.feedback().mark(cfg.collection, session, pid, body.mark)
        return _marks(session)

    @app.post("/feedback/{session}/undo", response_model=FeedbackOut, responses=_errors(422, 503))
    def undo(session: str = PathParam(..., pattern=SESSION_PATTERN, description=SESSION_HELP)) -> dict[str, Any]:
        """Take back the session's last mark (the item gets its earlier mark back)."""
        undone, _ = rec().feedback().undo(cfg.collection, session)
        return _marks(session, undone)

    @app.delete("/feedback/{session}", response_model=FeedbackOut, responses=_errors(422, 503))
    def reset(session: str = PathParam(..., pattern=SESSION_PATTERN, description=SESSION_HELP)) -> dict[str, Any]:
        """Forget a session's marks."""
        rec().feedback().reset(cfg.collection, session)
        return _marks(session)

    def roots() -> list[str]:
        """The corpus roots of this collection (what response paths are made relative to)."""
        catalog = Catalog(cfg.catalog_path)
        try:
            return catalog.sources(cfg.collection)
        finally:
            catalog.close()

    def _decisions_out(df) -> list[dict[str, Any]]:
        rows = [{**row, "decided_at": row["decided_at"].isoformat()} for row in df.to_dict("records")]
        return relative(rows, roots())

    @app.put("/duplicates/{cluster_id}/decisions", response_model=list[DecisionOut], responses=_errors(400, 404, 422, 503))
    def decide(body: DecisionIn, cluster_id: str = PathParam(..., min_length=1, max_length=200)) -> list[dict[str, Any]]:
        """Keep, discard or mark not-a-duplicate one member file of a cluster; returns the cluster's decisions.
        Discarded files are never recommended and are listed by /duplicates/delete-list; nothing is deleted."""
        from recommender.decisions import files_of

        r = rec()
        pid = _valid_id(body.item_id)
        with r._lock:
            payload, _ = r.store.get(pid)
        files = files_of(payload)
        members_of = {payload.get(P.CLUSTER_ID), payload.get(P.NEAR_CLUSTER_ID), pid if payload.get(P.COPIES) else None}
        if cluster_id not in members_of:
            raise HTTPException(422, f"Item '{pid}' is not a member of cluster '{cluster_id}' (see GET /duplicates).")
        named = {f: f for f in files} | {relative(f, [payload.get(P.SOURCE), *roots()]): f for f in files}
        path = named.get(body.path or payload.get(P.PATH, ""))
        if path is None:
            shown = [relative(f, [payload.get(P.SOURCE)]) for f in files[:5]]
            raise HTTPException(422, f"body 'path': '{str(body.path)[:200]}' is not a file of item '{pid}'; its files: {shown}.")
        r.decisions().decide(cfg.collection, cluster_id, pid, path, body.decision)
        return _decisions_out(r.decisions().frame(cfg.collection, cluster_id))

    @app.get("/duplicates/decisions", response_model=list[DecisionOut],
             responses={200: {"content": {"text/csv": {}, "application/vnd.apache.parquet": {}}}, **_errors(422, 503)})
    def decisions(format: str = Query("json", pattern="^(json|csv|parquet)$",
                                      description="json, csv for a spreadsheet, or parquet")) -> Any:
        """Every decided file with its cluster and decision (latest per file); paths relative to the corpus root."""
        df = rec().decisions().frame(cfg.collection)
        if format == "json":
            return _decisions_out(df)
        df["path"] = relative(list(df["path"]), roots())
        buf = io.BytesIO()
        df.to_csv(buf, index=False) if format == "csv" else df.to_parquet(buf, index=False)
        media = "text/csv" if format == "csv" else "application/vnd.apache.parquet"
        return Response(buf.getvalue(), media_type=media,
                        headers={"Content-Disposition": f'attachment; filename="duplicate_decisions.{format}"'})

    @app.get("/duplicates/delete-list", responses={200: {"content": {"text/plain": {}}}, **_errors(422, 503)})
    def delete_list(absolute: bool = Query(False, description=(
            "Absolute paths on the server (for a clean-up script run there); default: relative to the corpus root."))
                    ) -> Response:
        """The discarded files, one path per line: for the curator's own clean-up (the product deletes nothing)."""
        paths = rec().decisions().delete_list(cfg.collection)
        if not absolute:
            paths = relative(paths, roots())
        return Response("".join(f"{p}\n" for p in paths), media_type="text/plain")

    @app.get("/duplicates", response_model=DuplicatesOut, responses=_errors(422, 503))
    def duplicates(tier: Optional[str] = Query(None, pattern="^(exact|copy|near)$",
                                               description="Only clusters of this tier."),
                   sort: str = Query("size", pattern="^(size|score|tier|id)$", description=(
                       "size: largest first; score: most doubtful first (lowest member cosine to the canonical); "
                       "tier: exact, copy, near; id: cluster id.")),
                   limit: int = Query(20, ge=1, le=500), cursor: Optional[str] = Query(
                       None, pattern="^[0-9]{1,9}$", description="`next` of the previous page.")) -> dict[str, Any]:
        """Duplicate clusters with their members (canonical first), each member's cosine to the canonical
        and the curator's decision on each file; `pairs` lists every (canonical, member) pair of the page."""
        from recommender.browse import duplicate_clusters, score_clusters, sort_clusters

        r = rec()
        start = int(cursor or 0)
        with r._lock:
            clusters = duplicate_clusters(r.store, tier=tier)
            if sort == "score":  # the order needs every cluster's score; otherwise score the page only
                score_clusters(r.store, clusters)
            clusters = sort_clusters(clusters, sort)
            page = clusters[start:start + limit]
            if sort != "score":
                score_clusters(r.store, page)
        decided = {(d["point_id"], d["path"]): d["decision"] for d in r.decisions().frame(cfg.collection).to_dict("records")}
        nxt = start + limit if start + limit < len(clusters) else None
        return relative({"clusters": [_cluster_out(c, decided) for c in page], "pairs": _pairs_out(page),
                         "total": len(clusters), "limit": limit, "next": None if nxt is None else str(nxt)}, roots())

    @app.get("/runs", response_model=list[RunOut], responses=_errors(422, 503))
    def runs(limit: int = Query(20, ge=1, le=1000)) -> list[dict[str, Any]]:
        """Ingest and dedupe runs of the collection, newest first, with each run's report (stages, counts,
        files refused and why); a run whose process died shows as 'interrupted'."""
        from recommender.runs import run_history

        return [public_run({**run, "started": _iso(run.get("started_at")), "finished": _iso(run.get("finished_at"))})
                for run in run_history(cfg, limit=limit)]

    @app.get("/items/{item_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}, **_errors(404, 422, 503)})
    def thumbnail(item_id: str, size: int = Query(256, ge=16, le=THUMBNAIL_MAX)) -> Response:
        """A JPEG thumbnail of a catalogued item, found by id (never by a client-given path)."""
        r = rec()
        with r._lock:
            payload, _ = r.store.get(_valid_id(item_id))
        path = Path(str(payload.get(P.PATH, "")))
        if not path.is_file():
            raise NotFoundError(f"The file of item '{item_id}' is no longer at {path}; re-ingest its source.")
        if not gate.try_enter(THUMBNAIL_WAIT_S):
            raise gate.busy()
        try:
            image = _thumbnail_image(cfg, path, payload.get(P.ITEM_KEY), size, item_id)
        finally:
            gate.leave()
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def _thumbnail_image(cfg: Settings, path: Path, key: Any, size: int, item_id: str) -> Image.Image:
    """The item's picture, JPEG-drafted to the thumbnail size and reduced to it, in RGB."""
    options = replace(DecodeOptions.from_settings(cfg), draft_size=size)
    try:
        items = decode_file(path, options=options)
    except DecodeError as exc:
        raise NotFoundError(f"The file of item '{item_id}' can no longer be read ({exc.reason}).") from None
    if not items:
        raise NotFoundError(f"The file of item '{item_id}' no longer holds an image (no frame or slice left).")
    image = next((it.image for it in items if it.key == key), items[0].image)
    image.thumbnail((size, size))
    return image.convert("RGB")
