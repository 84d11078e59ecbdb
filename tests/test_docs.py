"""The documentation keeps up with the code: every command is in the README."""

from __future__ import annotations

from pathlib import Path

from typer.main import get_command

from sentinelle.cli import app

ROOT = Path(__file__).parents[1]


def test_readme_opens_with_the_two_commands() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    block = lines[1:5]
    assert block[0].startswith("```")
    assert block[1].startswith("make demo") and block[2].startswith("make test")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_every_command_is_documented() -> None:
    readme = (ROOT / "README.md").read_text()
    command = get_command(app)
    names = list(command.commands)  # type: ignore[attr-defined]
    assert names
    missing = [name for name in names if f"sentinelle {name}" not in readme]
    assert not missing, f"commands missing from README.md: {missing}"
