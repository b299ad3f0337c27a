"""CLI command groups: each module defines `register(app)` and is listed in `recommender.cli`."""
