"""Hardening of the decode path and the REST API against hostile input (issue 14).

Decode: the memory a decode needs is counted from the header (mode-aware, after the JPEG
draft) and a bomb is refused before any pixel exists. Uploads: the body limit holds while the
body streams, a stalled body times out, and a busy server answers 503 with Retry-After; these
drive the real app over raw ASGI so each byte the app pulls is counted. Validation: hostile
parameters get 4xx naming the field, never 5xx, and a schemathesis run over the whole OpenAPI
schema on the collection the real pipeline built finds no 5xx and no response off the schema.
"""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings as hyp_settings
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from api.app import create_app
from corpus import Built
from recommender.decode import DecodeError, DecodeLimitError, DecodeOptions, decode_file, decode_image_bytes, decoded_bytes
from recommender.items import DEFAULT_MAX_DECODED_BYTES
from recommender.recommend import Recommender
from recommender.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ART = sorted((REPO / "samples" / "art").rglob("*.jpg"))
MB = 1 << 20


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A 10,000 x 10,000 1-bit PNG of about 12 KB: under the 100 M pixel limit, 500 MB once decoded to RGB."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    Image.new("1", (10_000, 10_000), 0).save(path, optimize=True)
    return path


# -- decode: counted before decoding -------------------------------------------------------------

def test_bomb_is_refused_naming_file_size_and_limit(bomb):
    with pytest.raises(DecodeLimitError) as info:
        decode_file(bomb)
    msg = str(info.value)
    assert str(bomb) in msg and f"{bomb.stat().st_size:,}-byte" in msg and "10000x10000" in msg
    assert "500,000,000 bytes" in msg and f"{DEFAULT_MAX_DECODED_BYTES:,}" in msg and "RECOMMENDER_MAX_DECODED_BYTES" in msg
    assert isinstance(info.value, DecodeError)  # ingest reports it as a bad file like any other refusal


def test_bomb_refusal_allocates_nothing(bomb):
    """Peak RSS of a fresh process that refuses the bomb stays within a few MB of its start."""
    code = (  # VmHWM is this process's peak RSS (ru_maxrss would carry the parent's peak across exec)
        "import re, sys\n"
        "from recommender.decode import decode_file, DecodeLimitError\n"
        "peak = lambda: int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) * 1024\n"
        "before = peak()\n"
        "try:\n    decode_file(sys.argv[1])\nexcept DecodeLimitError:\n    pass\n"
        "print(peak() - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(bomb)], capture_output=True, text=True, cwd=REPO, check=True)
    assert int(out.stdout.strip()) < 20 * MB


def _opened(tmp_path: Path, img: Image.Image, name: str, **kw) -> Image.Image:
    img.save(tmp_path / name, **kw)
    return Image.open(tmp_path / name)


def test_decoded_bytes_counts_mode_and_rgb_conversion(tmp_path):
    n = 100 * 80
    assert decoded_bytes(_opened(tmp_path, Image.new("1", (100, 80)), "a.png")) == n * (1 + 4)
    assert decoded_bytes(_opened(tmp_path, Image.new("L", (100, 80)), "b.png")) == n * (1 + 4)
    assert decoded_bytes(_opened(tmp_path, Image.new("L", (100, 80)), "b2.png"), grey=True) == n
    assert decoded_bytes(_opened(tmp_path, Image.new("RGB", (100, 80)), "c.png")) == n * 4  # PIL pads RGB to 4
    assert decoded_bytes(_opened(tmp_path, Image.new("RGBA", (100, 80)), "d.png")) == n * (4 + 16)
    sixteen = Image.fromarray(np.zeros((80, 100), np.uint16))
    assert decoded_bytes(_opened(tmp_path, sixteen, "e.png")) == n * (2 + 2 + 6)
    pal = _opened(tmp_path, Image.new("P", (100, 80)), "f.png", transparency=0)
    assert decoded_bytes(pal) == n * (1 + 16)


def test_jpeg_draft_is_counted_after_the_draft(tmp_path):
    """A 2400x1600 JPEG needs 15 MB in full, under 1 MB drafted for a 256-px model: the limit sees the draft."""
    path = tmp_path / "big.jpg"
    Image.open(ART[0]).convert("RGB").resize((2400, 1600)).save(path, quality=90)
    small = DecodeOptions(max_decoded_bytes=2 * MB)
    with pytest.raises(DecodeLimitError, match="2400x1600"):
        decode_file(path, options=small)
    image = decode_file(path, options=DecodeOptions(max_decoded_bytes=2 * MB, draft_size=256))[0].image
    assert image.mode == "RGB" and min(image.size) >= 256 and image.size[0] < 2400


def test_upload_decode_is_reduced_to_the_model_size():
    """An upload only feeds the model: a big PNG (no JPEG draft) is box-reduced right after decoding,
    short side kept at or above the draft size, so the model's resize never copies it at full size."""
    buf = io.BytesIO()
    Image.new("L", (2100, 1100), 90).save(buf, "PNG")
    image = decode_image_bytes(buf.getvalue(), "big.png", 10**8, draft_size=256)
    assert image.mode == "RGB" and image.size == (525, 275)  # factor 4 = 1100 // 256
    assert decode_image_bytes(buf.getvalue(), "big.png", 10**8).size == (2100, 1100)  # no draft size: full


def test_sixteen_bit_scaling_in_row_blocks_matches_whole_image(tmp_path):
    """The high-bit path scales in row blocks (bounded float64 memory); values equal the whole-image formula."""
    rng = np.random.default_rng(0)
    full = rng.integers(0, 65535, (700, 50), dtype=np.uint16)
    narrow = rng.integers(100, 4000, (700, 50), dtype=np.uint16)
    lo, hi = float(narrow.min()), float(narrow.max())
    for arr, expect in ((full, np.clip(full / 257.0, 0, 255).astype(np.uint8)),
                        (narrow, ((narrow - lo) / (hi - lo) * 255.0).round().astype(np.uint8))):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG")
        got = np.asarray(decode_image_bytes(buf.getvalue(), "x.png", 10**8))[..., 0]
        assert np.array_equal(got, expect)


# -- uploads: limits while streaming, timeouts, a cap on concurrent decodes -----------------------

def _multipart_head(boundary: str = "B") -> bytes:
    return (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"q.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()


class Upload:
    """One POST /similar/image over raw ASGI: `chunks` is an iterable of body pieces (None = stall
    until `release` is set); `pulled` counts the body bytes the app read."""

    def __init__(self, chunks, content_length: int | None = None):
        self.chunks, self.content_length = iter(chunks), content_length
        self.pulled, self.status, self.headers, self.body = 0, None, {}, b""
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def receive(self) -> dict:
        piece = next(self.chunks, b"")
        if piece is None:
            self.started.set()
            await self.release.wait()
            piece = next(self.chunks, b"")
        self.pulled += len(piece)
        return {"type": "http.request", "body": piece, "more_body": bool(piece)}

    async def send(self, message: dict) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")

    async def run(self, app) -> "Upload":
        headers = [(b"content-type", b"multipart/form-data; boundary=B"), (b"host", b"test")]
        if self.content_length is not None:
            headers.append((b"content-length", str(self.content_length).encode()))
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
                 "path": "/similar/image", "raw_path": b"/similar/image", "query_string": b"", "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("test", 80)}
        await asyncio.wait_for(app(scope, self.receive, self.send), 30)
        return self


def _app(tmp_path: Path, limit: int = 1_000_000, **kw):
    return create_app(Settings(home=tmp_path / "home", max_upload_bytes=limit), **kw)


def test_declared_length_over_the_limit_is_refused_unread(tmp_path):
    up = asyncio.run(Upload([_multipart_head(), b"x" * 1000], content_length=190 * MB).run(_app(tmp_path)))
    assert up.status == 413 and up.pulled == 0
    assert "1,000,000-byte limit" in json.loads(up.body)["detail"]


def test_chunked_upload_is_stopped_at_the_limit(tmp_path):
    """190 MB sent chunked (no Content-Length): the app stops pulling just past limit + form overhead."""
    chunks = (_multipart_head(), *(b"\0" * MB for _ in range(190)))
    up = asyncio.run(Upload(chunks).run(_app(tmp_path)))
    assert up.status == 413 and "RECOMMENDER_MAX_UPLOAD_BYTES" in json.loads(up.body)["detail"]
    assert up.pulled <= 1_000_000 + 64 * 1024 + MB + len(_multipart_head())


def test_stalled_upload_times_out_with_408(tmp_path):
    app = _app(tmp_path, read_timeout=0.3)
    up = asyncio.run(Upload([_multipart_head(), None]).run(app))
    assert up.status == 408 and "did not arrive in time" in json.loads(up.body)["detail"]


def test_busy_decode_slots_answer_503_with_retry_after(tmp_path):
    """One slot: while an upload streams, a second gets 503 + Retry-After unread; once it ends, the slot is free."""
    app = _app(tmp_path, limit=1000, max_concurrent_decodes=1)

    async def scenario():
        first = Upload([_multipart_head(), b"a" * 500, None, b"b" * 100_000])
        task = asyncio.create_task(first.run(app))
        await asyncio.wait_for(first.started.wait(), 10)
        second = await Upload([_multipart_head(), b"c" * 10]).run(app)
        first.release.set()
        await task
        third = await Upload([_multipart_head(), b"d" * 100_000]).run(app)
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert second.status == 503 and second.headers["retry-after"] == "2" and second.pulled == 0
    assert "decode slots are busy" in json.loads(second.body)["detail"]
    assert first.status == 413 and third.status == 413  # both got a slot and were stopped by the body limit


# -- validation on the pipeline-built collection -------------------------------------------------

@pytest.fixture(scope="module")
def rec(pipeline_built: Built, tmp_path_factory):
    cfg = pipeline_built.copy_home(tmp_path_factory.mktemp("hardening") / "home")
    r = Recommender(cfg.with_overrides(max_upload_bytes=200_000))
    yield r
    r.close()


@pytest.fixture(scope="module")
def client(rec):
    with TestClient(create_app(rec.settings, recommender=rec), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="module")
def seed(rec) -> str:
    return rec.store.find_by_path("art/landscape/cl010052648.jpg")


@pytest.mark.slow
def test_bomb_upload_is_413_naming_the_limit(client, bomb):
    r = client.post("/similar/image", files={"file": ("bomb.png", bomb.read_bytes(), "image/png")})
    assert r.status_code == 413, r.text
    assert "too large to decode" in r.json()["detail"] and "RECOMMENDER_MAX_DECODED_BYTES" in r.json()["detail"]


@pytest.mark.slow
def test_unknown_filter_and_group_by_fields_list_the_fields_that_exist(client, seed):
    r = client.get(f"/items/{seed}/similar", params={"filters": json.dumps({"genrre": "Portrait"})})
    assert r.status_code == 422 and "genrre" in r.json()["detail"] and "genre" in r.json()["detail"].split("exist")[1]
    r = client.get(f"/items/{seed}/similar", params={"group_by": "nope"})
    assert r.status_code == 422 and "group-by field 'nope'" in r.json()["detail"] and "genre" in r.json()["detail"]
    r = client.post("/recommend", json={"positive": [seed], "filters": {"nope": 1}})
    assert r.status_code == 422 and "nope" in r.json()["detail"]


HOSTILE_FILTERS = {
    "deeply nested": "[" * 15_000, "nested object": "{\"genre\":" * 1500, "malformed": "{genre:",
    "nested list": json.dumps({"genre": [[["a"]]]}), "nested range": json.dumps({"width": {"gte": {"a": 1}}}),
    "NaN bound": '{"width": {"gte": NaN}}', "infinite": '{"width": {"lt": 1e400}}', "huge int": json.dumps({"width": 10**30}),
    "int too long to parse": '{"width": ' + "9" * 5000 + "}", "empty key": json.dumps({"": 1}), "list": "[1, 2]",
    "float equality": json.dumps({"width": 1.5}), "empty range": json.dumps({"width": {}}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_FILTERS))
def test_hostile_filters_get_4xx_naming_filters(client, seed, name):
    r = client.get(f"/items/{seed}/similar", params={"filters": HOSTILE_FILTERS[name]})
    assert r.status_code in (400, 422), (name, r.status_code, r.text[:300])
    assert "filter" in r.json()["detail"].lower()


@pytest.mark.slow
def test_hostile_parameters_get_4xx_naming_the_field(client, seed):
    cases = [
        ("get", "/items/%C2%B2/similar", {}, "item_id"),  # '²' is a digit to str.isdigit
        ("get", f"/items/{'9' * 30}", {}, "item_id"),
        ("get", f"/items/{seed}/similar?score_threshold=nan", {}, "score_threshold"),
        ("get", f"/items/{seed}/similar?k=many", {}, "'k'"),
        ("get", f"/items/{seed}/thumbnail?size=9", {}, "'size'"),
        ("post", "/recommend", {"json": {"positive": ["~no_such_user/x.jpg"]}}, "positive"),
        ("post", "/recommend", {"json": {"positive": ["a" * 300]}}, "positive"),
        ("post", "/recommend", {"json": {"positive": [seed], "filters": {"genre": [[1]]}}}, "filters.genre"),
        ("post", "/recommend", {"json": {"positive": [seed], "k": "lots"}}, "'k'"),
        ("post", "/recommend", {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, "body"),
        ("post", "/similar/image", {"data": {"k": "1"}}, "'file'"),
    ]
    for method, url, kw, field in cases:
        r = getattr(client, method)(url, **kw)
        assert 400 <= r.status_code < 500, (url, r.status_code, r.text[:300])
        assert field in r.json()["detail"], (url, r.json()["detail"][:300])


# -- schemathesis over the whole OpenAPI schema ---------------------------------------------------

class ServedApp:
    """The ASGI app schemathesis calls. The OpenAPI document needs no store, so the schema loads at
    import; requests go to the app over the pipeline-built collection once `served` has set it.
    (schemathesis' lazy `from_fixture` loader reads `Node._nodeid`, which pytest 9 no longer has.)"""

    app = create_app(Settings())
    ids: list[str] = []  # real point ids, so generated queries also reach the store's search and payloads

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


SERVED = ServedApp()
schema = schemathesis.openapi.from_asgi("/openapi.json", SERVED)


@schema.hook
def map_path_parameters(context, path_parameters: dict | None) -> dict | None:
    """Every other generated item id becomes a real one: random filters, group-by and paging then
    run against the collection instead of stopping at 404."""
    item = (path_parameters or {}).get("item_id")
    if SERVED.ids and isinstance(item, str) and len(item) % 2 == 0:
        path_parameters["item_id"] = SERVED.ids[len(item) % len(SERVED.ids)]
    return path_parameters


@schema.hook
def map_body(context, body):
    """Likewise for /recommend: an even-length positive list becomes real examples."""
    if SERVED.ids and isinstance(body, dict) and isinstance(body.get("positive"), list) and len(body["positive"]) % 2 == 0:
        body["positive"] = SERVED.ids[: 1 + len(body["positive"]) % 3]
    return body


@pytest.fixture(scope="module")
def served(rec):
    SERVED.app = create_app(rec.settings, recommender=rec)
    SERVED.ids = [str(pid) for pid, _, _ in rec.store.scroll_where(limit=5, with_payload=False)[0]]
    assert len(SERVED.ids) == 5
    yield SERVED


@pytest.mark.slow
@schema.parametrize()
@hyp_settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_openapi_schema_no_5xx_and_every_response_conforms(case, served):
    case.call_and_validate(checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                                   response_schema_conformance, response_headers_conformance])
