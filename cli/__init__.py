"""The `recommender` command (typer): one entry point to ingest, query, deduplicate and serve.

`cli.main` builds the app; each module beside it holds one group of commands. Heavy
libraries (torch, qdrant_client, prefect) are imported inside the command functions,
so `recommender --help` and argument errors answer at once.
"""
