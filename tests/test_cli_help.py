"""Every CLI command and every option and argument carries help text (what `--help` shows)."""

from __future__ import annotations

import click
import typer

from cli.main import app


def _undocumented(command, path: list[str]) -> list[str]:
    if hasattr(command, "commands"):  # a group (typer ships its own click classes)
        return [m for name, sub in command.commands.items() for m in _undocumented(sub, [*path, name])]
    missing = [] if (command.help or "").strip() else [f"{' '.join(path)}: the command itself"]
    missing += [f"{' '.join(path)} {p.name}" for p in command.params
                if p.name != "help" and not (getattr(p, "help", None) or "").strip()]
    return missing


def test_every_command_option_and_argument_has_help():
    root = typer.main.get_command(app)
    assert len(root.commands) >= 8
    assert _undocumented(root, ["recommender"]) == []


def test_the_check_finds_an_undocumented_option():
    bare = click.Command("bare", help="A command.", params=[click.Option(["--size"])])
    assert _undocumented(bare, ["x"]) == ["x size"]
