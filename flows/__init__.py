"""Prefect flows: thin orchestration over `recommender.ingest`."""
