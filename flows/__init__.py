"""Prefect flows: thin orchestration over `recommender.pipeline`."""
