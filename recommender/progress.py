"""A rich progress bar with images/second for long runs (stderr, so --json stays clean)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn


@contextmanager
def progress_bar(total: int, enabled: bool = True, label: str = "ingest") -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`; a no-op when disabled or when there is nothing to do."""
    if not enabled or total == 0:
        yield lambda n: None
        return
    columns = (
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"), TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(label, total=total, rate="")

        def advance(n: int) -> None:
            progress.advance(task, n)
            speed = progress.tasks[task].speed
            progress.update(task, rate=f"{speed:.1f} images/s" if speed else "")

        yield advance
