"""The REST API (FastAPI) over the library's `Recommender`: `api.app.create_app`; `recommender serve` runs it."""
