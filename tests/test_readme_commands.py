"""Every ``mnistkit ...`` command the READMEs show exists: its subcommand and each of its options.

README.zh-CN.md is kept in step with README.md: it tours the same commands.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from mnistkit.cli import cli

REPO = Path(__file__).resolve().parents[1]
READMES = ("README.md", "README.zh-CN.md")


def shown_commands(path: Path) -> list[list[str]]:
    """Argument lists of the ``mnistkit`` commands in the file's ``sh``/``console`` code blocks."""
    commands, block = [], None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block not in ("sh", "console", "bash"):
            continue
        text = line.strip()
        if block == "console":
            if not text.startswith("$ "):
                continue
            text = text[2:]
        match = re.search(r"(?:^|-m )mnistkit (.*)", text)
        if match:
            args = shlex.split(match.group(1), comments=True)
            commands.append(args)
    return commands


def check_command(args: list[str]) -> None:
    """Walk the click tree: subcommands must exist, options must belong to the command reached."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="mnistkit")
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} in `mnistkit {' '.join(args)}`"
        command = sub
    names = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    names |= {"--help", "-h"}
    for token in rest:
        if token.startswith("-") and token != "-":
            option = token.split("=", 1)[0]
            assert option in names, f"`mnistkit {' '.join(args)}`: {command.name} has no option {option}"


@pytest.mark.parametrize("readme", READMES)
def test_every_command_shown_exists(readme):
    commands = shown_commands(REPO / readme)
    assert len(commands) >= 10, f"{readme}: found only {len(commands)} commands; is the parser right?"
    for args in commands:
        check_command(args)


def test_the_chinese_readme_tours_the_same_commands():
    def subcommands(readme):
        return {args[0] for args in shown_commands(REPO / readme) if args}

    english, chinese = subcommands("README.md"), subcommands("README.zh-CN.md")
    assert english - chinese == set(), f"README.zh-CN.md does not show: {sorted(english - chinese)}"


def test_the_checker_catches_a_wrong_command():
    with pytest.raises(AssertionError, match="no command 'trian'"):
        check_command(["trian"])
    with pytest.raises(AssertionError, match="train has no option --learning-rate"):
        check_command(["train", "--learning-rate", "3"])
