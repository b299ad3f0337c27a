"""The apps behind the command: `serve` (REST API, uvicorn) and `dashboard` (Streamlit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import typer

from cli.common import CollectionOpt, HomeOpt, settings


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (0.0.0.0 exposes it to the network)."),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="HTTP port."),
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    max_upload_bytes: Optional[int] = typer.Option(None, "--max-upload-bytes", help="Largest upload (413 above)."),
) -> None:
    """Serve the REST API (OpenAPI docs at /docs)."""
    import uvicorn

    from api.app import create_app

    cfg = settings(home=home, collection=collection, max_upload_bytes=max_upload_bytes)
    base = url(host, port)
    typer.echo(f"REST API   {base}  (collection '{cfg.collection}', home {cfg.home})\n"
               f"API docs   {base}/docs  and  {base}/redoc\nPress Ctrl+C to stop.", err=True)
    uvicorn.run(create_app(cfg), host=host, port=port, log_level="warning")


def url(host: str, port: int) -> str:
    """The address to open for a bound interface (all interfaces: this machine's loopback)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def dashboard(
    collection: Optional[str] = CollectionOpt,
    home: Optional[Path] = HomeOpt,
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="HTTP port."),
    headless: bool = typer.Option(True, help="Do not open a browser."),
) -> None:
    """Start the Streamlit dashboard on the current collection."""
    cfg = settings(home=home, collection=collection)
    import dashboard as dash_pkg

    env = {**os.environ, "RECOMMENDER_HOME": str(cfg.home), "RECOMMENDER_COLLECTION": cfg.collection}
    app_path = Path(dash_pkg.__file__).parent / "app.py"
    cmd = [sys.executable, "-m", "streamlit", "run", str(app_path), "--server.port", str(port),
           "--server.headless", str(headless).lower(), "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "viewer"]
    typer.echo(f"Dashboard  {url('127.0.0.1', port)}  (collection '{cfg.collection}', home {cfg.home})\n"
               "Press Ctrl+C to stop.", err=True)
    raise typer.Exit(subprocess.call(cmd, env=env))
