"""REST API over the `Recommender` (FastAPI; OpenAPI docs at /docs).

`create_app(settings)` builds the app; `recommender serve` (cli/apps.py) runs it with uvicorn.
Errors are mapped to status codes a client can act on: unknown item 404,
invalid parameters 422, upload too large 413 (`max_upload_bytes`), not an
image 415, a store in use by another process 503. Thumbnails are served by
point id only: the file path is looked up in the store, so no request can
name an arbitrary file.
"""

from __future__ import annotations

import io
import json
import threading
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Optional

from fastapi import FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from api.schemas import QueryOptions, RecommendIn, ResultOut
from recommender import payload as P
from recommender.decode import DecodeError, decode_file
from recommender.errors import NotFoundError, RecommenderError, StoreLockedError
from recommender.recommend import Recommender, Result
from recommender.settings import Settings, get_settings

THUMBNAIL_MAX = 1024


def _out(results: list[Result]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def create_app(settings: Settings | None = None, recommender: Recommender | None = None) -> FastAPI:
    """The app; pass a `Recommender` to share an already open store (tests, embedding in another app)."""
    cfg = settings or get_settings()
    state: dict[str, Any] = {"rec": recommender}
    lock = threading.Lock()

    def rec() -> Recommender:
        with lock:
            if state["rec"] is None:
                state["rec"] = Recommender(cfg)
                state["owned"] = True
            return state["rec"]

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        if state.get("owned") and state["rec"] is not None:
            state["rec"].close()

    app = FastAPI(title="Image recommender", version="1.0", lifespan=lifespan,
                  description="Similar images by item, upload, text or examples, with filters, grouping and diversity.")

    @app.exception_handler(NotFoundError)
    async def _not_found(_: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreLockedError)
    async def _locked(_: Request, exc: StoreLockedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(DecodeError)
    async def _not_image(_: Request, exc: DecodeError) -> JSONResponse:
        return JSONResponse({"detail": f"Upload is not a readable image: {exc.reason}"}, status_code=415)

    @app.exception_handler(RecommenderError)
    async def _invalid(_: Request, exc: RecommenderError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def options(q: QueryOptions) -> dict[str, Any]:
        return q.model_dump()

    def filters_param(raw: Optional[str]) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise HTTPException(422, f"filters is not JSON ({exc.msg}); e.g. filters={{\"genre\":\"Landscape\"}}") from None
        if not isinstance(value, dict):
            raise HTTPException(422, "filters must be a JSON object of field -> value / [values] / {gte, lte}.")
        return value

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Liveness plus what is being served."""
        r = rec()
        with r._lock:
            points = r.store.count()
        return {"status": "ok", "collection": cfg.collection, "model": r.model_name, "engine": r.engine, "points": points}

    @app.get("/items/{item_id}")
    def item(item_id: str) -> dict[str, Any]:
        """One item's payload."""
        r = rec()
        with r._lock:
            payload, _ = r.store.get(_valid_id(item_id))
        return {"id": item_id, "payload": payload}

    @app.get("/items/{item_id}/similar", response_model=list[ResultOut])
    def similar(item_id: str, k: int = Query(10, ge=1, le=1000), offset: int = Query(0, ge=0, le=100_000),
                filters: Optional[str] = Query(None, description="JSON object, e.g. {\"genre\": \"Landscape\"}"),
                group_by: Optional[str] = None, group_size: int = Query(1, ge=1, le=100),
                mmr_lambda: Optional[float] = Query(None, ge=0.0, le=1.0), score_threshold: Optional[float] = None,
                collapse_duplicates: bool = True) -> list[dict[str, Any]]:
        """Items similar to a stored item."""
        q = QueryOptions(k=k, offset=offset, filters=filters_param(filters), group_by=group_by, group_size=group_size,
                         mmr_lambda=mmr_lambda, score_threshold=score_threshold,
                         collapse_duplicates=collapse_duplicates)
        return _out(rec().recommend([_valid_id(item_id)], **options(q)))

    @app.post("/recommend", response_model=list[ResultOut])
    def recommend(body: RecommendIn) -> list[dict[str, Any]]:
        """Positive/negative examples (best-score strategy), optionally with a text."""
        opts = body.model_dump(exclude={"positive", "negative", "text"})
        return _out(rec().recommend(body.positive, body.negative, text=body.text, **opts))

    @app.get("/search", response_model=list[ResultOut])
    def search_text(q: str = Query(..., min_length=1, max_length=1000), k: int = Query(10, ge=1, le=1000),
                    offset: int = Query(0, ge=0), filters: Optional[str] = None) -> list[dict[str, Any]]:
        """Items matching a text description (CLIP collections; others answer 422)."""
        return _out(rec().recommend(text=q, k=k, offset=offset, filters=filters_param(filters)))

    @app.post("/similar/image", response_model=list[ResultOut])
    async def similar_image(request: Request, file: UploadFile = File(..., description="An image (not stored)."),
                            k: int = Form(10, ge=1, le=1000), offset: int = Form(0, ge=0),
                            filters: Optional[str] = Form(None), group_by: Optional[str] = Form(None),
                            group_size: int = Form(1, ge=1, le=100),
                            mmr_lambda: Optional[float] = Form(None, ge=0.0, le=1.0),
                            score_threshold: Optional[float] = Form(None)) -> list[dict[str, Any]]:
        """Items similar to an uploaded image, embedded on the fly."""
        limit = cfg.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
            raise HTTPException(413, f"Upload is larger than the {limit}-byte limit (RECOMMENDER_MAX_UPLOAD_BYTES).")
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise HTTPException(413, f"Upload is larger than the {limit}-byte limit (RECOMMENDER_MAX_UPLOAD_BYTES).")
        if not data:
            raise HTTPException(415, "Upload is empty; send an image file (JPEG, PNG, ...).")
        q = QueryOptions(k=k, offset=offset, filters=filters_param(filters), group_by=group_by,
                         group_size=group_size, mmr_lambda=mmr_lambda, score_threshold=score_threshold)
        results = await run_in_threadpool(rec().recommend, image=data, **options(q))
        return _out(results)

    @app.get("/items/{item_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(item_id: str, size: int = Query(256, ge=16, le=THUMBNAIL_MAX)) -> Response:
        """A JPEG thumbnail of a catalogued item, found by id (never by a client-given path)."""
        r = rec()
        with r._lock:
            payload, _ = r.store.get(_valid_id(item_id))
        path = Path(str(payload.get(P.PATH, "")))
        if not path.is_file():
            raise NotFoundError(f"The file of item '{item_id}' is no longer at {path}; re-ingest its source.")
        try:
            items = decode_file(path, cfg.max_image_pixels)
        except DecodeError as exc:
            raise NotFoundError(f"The file of item '{item_id}' can no longer be read ({exc.reason}).") from None
        key = payload.get(P.ITEM_KEY)
        image = next((it.image for it in items if it.key == key), items[0].image)
        image = image.copy()
        image.thumbnail((size, size))
        buf = io.BytesIO()
        image.convert("RGB").save(buf, "JPEG", quality=85)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "max-age=3600"})

    return app


def _valid_id(item_id: str) -> str:
    """Point ids are UUIDs or unsigned integers; anything else (a path, '..') is rejected with 422."""
    if item_id.isdigit():
        return item_id
    try:
        return str(uuid.UUID(item_id))
    except ValueError:
        raise HTTPException(422, f"'{item_id}' is not an item id (a UUID or an integer).") from None
