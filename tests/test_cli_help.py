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


def _commands(command, path: list[str]):
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from _commands(sub, [*path, name])
    else:
        yield path


def test_every_command_prints_its_help():
    """Help text is formatted only when asked for: a stray `%` in an argparse help string crashed
    `evaluate-dedup`'s own `--help` (session 48), so every command is asked."""
    from typer.testing import CliRunner

    runner = CliRunner()
    paths = list(_commands(typer.main.get_command(app), []))
    assert ["evaluate-dedup"] in paths
    for path in paths:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output, path


def test_the_dedup_evaluation_lists_every_planted_set_with_what_it_holds(capsys):
    import pytest

    from recommender.dedup.evaluate import main
    from recommender.dedup.transforms import FAMILIES, FAMILY_NOTES

    assert set(FAMILY_NOTES) == set(FAMILIES)
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for name in FAMILIES:
        assert f"\n  {name} " in out, name
    assert "the top 30 percent cut off" in out
