"""The READMEs and docs/ say only what holds.

- Every ``mnistkit ...`` command they show (in code blocks and inline code) exists: its subcommand,
  each of its options, and the value of an option with fixed choices.
- Every figure they give (a percentage, a time, a ratio, or a number in a table whose header has
  one of those units) names the results file it comes from, ``bench/results/NAME.json``, in the same
  paragraph, list item or table row, or in the paragraph just above the table or code block (its
  caption); and every results file they name exists. Settings are not figures: an option's default
  is written without a unit (``--request-timeout`` seconds, default 10) or in inline code.
- Every ``python`` example parses, the names it imports from mnistkit exist, and each
  ``mnistkit.NAME`` it uses is public API.
- README.zh-CN.md follows README.md section by section, showing every command it shows; relative links
  lead to files that exist; no page writes a password into a URL.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from mnistkit.cli import cli

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))
PAGES = ("README.md", "README.zh-CN.md", *DOCS)
#: The pages the README promises (issue 26): one each.
DOC_PAGES = ("cli", "presets", "serving", "tuning", "data", "calibration")
README_MAX_LINES = 260
#: Code blocks in these languages are configuration (nginx's ``10s``, a TOML range): settings, not figures.
CONFIG_BLOCKS = {"nginx", "toml", "yaml", "json", "ini"}

NUMBER = r"(?<![\w.])\d[\d,]*(?:\.\d+)?"  # not the 1 of F1
FIGURE = re.compile(
    rf"{NUMBER}\s?%"  # a percentage
    rf"|{NUMBER}\s?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b"  # a time
    rf"|{NUMBER}x\b"  # a ratio
)
#: A table header naming one of those units makes every number in the table a figure.
UNIT_HEADER = re.compile(r"%|\b(?:s|ms|seconds|minutes|ratio|images/s)\b")
RESULTS = re.compile(r"bench/results/[\w.\-]+\.json")
INLINE_CODE = re.compile(r"`[^`]*`")


@dataclass
class Block:
    """A paragraph, list item, heading, table or fenced code block of a Markdown page."""

    kind: str  # "text", "table" or "code"
    lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)
    lang: str = ""
    caption: Block | None = None  # the text block just above a table or code block

    @property
    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


def blocks(text: str) -> list[Block]:
    """Split Markdown into blocks; a table or code block gets the paragraph just above as its caption."""
    out: list[Block] = []
    current: Block | None = None
    last_text: Block | None = None  # the nearest text block, while only blank lines follow it

    def close():
        nonlocal current
        if current is not None:
            out.append(current)
        current = None

    for number, line in enumerate(text.splitlines(), 1):
        if current is not None and current.kind == "code":
            if line.startswith("```"):
                close()
            else:
                current.lines.append((number, line))
            continue
        if line.startswith("```"):
            caption = last_text
            close()
            current = Block("code", lang=line[3:].strip(), caption=caption)
            last_text = None
        elif not line.strip():
            if current is not None and current.kind == "text":
                last_text = current
            close()
        elif line.lstrip().startswith("|"):
            if current is None or current.kind != "table":
                caption = current if current is not None and current.kind == "text" else last_text
                close()
                current = Block("table", caption=caption)
                last_text = None
            current.lines.append((number, line))
        else:
            starts_item = re.match(r"\s*(?:[-*]|\d+\.)\s|#", line) is not None
            if current is None or current.kind != "text" or starts_item:
                close()
                current = Block("text")
                last_text = None
            current.lines.append((number, line))
    close()
    return out


def _figures(text: str) -> list[str]:
    return FIGURE.findall(INLINE_CODE.sub("", text))


def unsourced_figures(page: str, text: str) -> list[str]:
    """``page:line: figure`` for each figure whose block (or caption) names no results file."""
    problems = []
    for block in blocks(text):
        if block.kind == "code" and block.lang in CONFIG_BLOCKS:
            continue
        sources = RESULTS.findall(block.text) + (RESULTS.findall(block.caption.text) if block.caption else [])
        if sources:
            continue
        figures: list[tuple[int, str]] = []
        if block.kind == "table" and UNIT_HEADER.search(INLINE_CODE.sub("", block.lines[0][1])):
            figures += [(n, line.strip()) for n, line in block.lines[2:] if re.search(r"\d", line)]
        else:
            figures += [(n, f) for n, line in block.lines for f in _figures(line)]
        problems += [f"{page}:{n}: {f}" for n, f in figures]
    return problems


# --- commands -------------------------------------------------------------------------------------


def shown_commands(path: Path, inline: bool = True) -> list[list[str]]:
    """Argument lists of the ``mnistkit`` commands in the page's code blocks (and its inline code)."""
    return commands_in(path.read_text(encoding="utf-8"), inline)


def commands_in(text: str, inline: bool = True) -> list[list[str]]:
    """Argument lists of the ``mnistkit`` commands in Markdown ``text`` (see :func:`shown_commands`)."""
    commands = []
    for block in blocks(text):
        if block.kind == "code":
            if block.lang not in ("sh", "console", "bash"):
                continue
            for _, line in block.lines:
                text = line.strip()
                if block.lang == "console":
                    if not text.startswith("$ "):
                        continue
                    text = text[2:]
                match = re.search(r"(?:^|-m )mnistkit (.*)", text)
                if match:
                    commands.append(shlex.split(match.group(1).rstrip("\\"), comments=True))
        elif inline:
            for _, line in block.lines:
                for span in re.findall(r"`mnistkit ([a-z][^`]*)`", line):
                    if not span.split()[0].endswith(":"):  # `mnistkit predict: error:` is output, not a command
                        commands.append(shlex.split(span))
    return commands


def check_command(args: list[str]) -> None:
    """Walk the click tree: subcommands must exist, options must belong to the command reached, and an
    option with fixed choices must be given one of them (placeholders such as NAME aside)."""
    command: click.Command = cli
    ctx = click.Context(cli, info_name="mnistkit")
    rest = list(args)
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        sub = command.get_command(ctx, name)
        assert sub is not None, f"no command {name!r} in `mnistkit {' '.join(args)}`"
        command = sub
    params = {opt: p for p in command.params for opt in (*p.opts, *p.secondary_opts)}
    for i, token in enumerate(rest):
        if not token.startswith("-") or token == "-" or token in ("--help", "-h"):
            continue
        option, _, inline_value = token.partition("=")
        assert option in params, f"`mnistkit {' '.join(args)}`: {command.name} has no option {option}"
        param = params[option]
        value = inline_value or (rest[i + 1] if i + 1 < len(rest) else "")
        if isinstance(param.type, click.Choice) and value and not value.isupper() and "|" not in value:
            assert value in param.type.choices, (
                f"`mnistkit {' '.join(args)}`: {option} takes one of {list(param.type.choices)}, not {value!r}"
            )


@pytest.mark.parametrize("page", PAGES)
def test_every_command_shown_exists(page):
    commands = shown_commands(REPO / page)
    if page.startswith("README"):
        assert len(commands) >= 10, f"{page}: found only {len(commands)} commands; is the parser right?"
    for args in commands:
        check_command(args)


def test_the_chinese_readme_shows_every_command_of_the_english_one():
    def shown(readme):
        return {shlex.join(args) for args in shown_commands(REPO / readme, inline=False)}

    missing = shown("README.md") - shown("README.zh-CN.md")
    assert not missing, f"README.zh-CN.md does not show: {sorted(missing)}"


def sections(path: Path) -> list[tuple[str, set[str]]]:
    """(heading, the commands its code blocks show) for each ``##`` section of a page."""
    found: list[tuple[str, set[str]]] = []
    for part in re.split(r"^## ", path.read_text(encoding="utf-8"), flags=re.M)[1:]:
        heading, _, body = part.partition("\n")
        found.append((heading.strip(), {shlex.join(args) for args in commands_in(body, inline=False)}))
    return found


def test_the_chinese_readme_follows_the_english_ones_tour_section_by_section():
    """README.zh-CN.md mirrors README.md: the same sections in the same order, each showing its commands."""
    english, chinese = sections(REPO / "README.md"), sections(REPO / "README.zh-CN.md")
    assert len(chinese) == len(english), ([h for h, _ in english], [h for h, _ in chinese])
    for (heading, commands), (zh_heading, zh_commands) in zip(english, chinese):
        missing = commands - zh_commands
        assert not missing, f"README.zh-CN.md section {zh_heading!r} (README.md: {heading!r}) lacks {sorted(missing)}"


#: ``scheme://user:secret@host``: a password written into a URL (``$VAR`` or ``***`` in its place is fine)
CREDENTIALS = re.compile(r"\b[a-z][\w+.-]*://[^\s/@:`]+:(?![$*])[^\s/@`]+@")


@pytest.mark.parametrize("page", PAGES)
def test_no_example_writes_a_password_into_a_url(page):
    found = CREDENTIALS.findall((REPO / page).read_text(encoding="utf-8"))
    assert not found, f"{page} shows a URL with a password in it; use an environment variable instead"


def test_the_credentials_check_catches_a_password():
    assert CREDENTIALS.search("--storage postgresql://optuna:hunter2@db/optuna")
    assert not CREDENTIALS.search("--storage postgresql://USER@db-host/optuna")
    assert not CREDENTIALS.search('--storage "$MNISTKIT_STORAGE" or postgresql://u:$PGPASS@db/x')


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """(first line number, source) of each ``python`` code block in the page."""
    return [
        (block.lines[0][0], "\n".join(line for _, line in block.lines))
        for block in blocks(path.read_text(encoding="utf-8"))
        if block.kind == "code" and block.lang == "python" and block.lines
    ]


def check_python(source: str, where: str) -> None:
    """The block parses, the names it imports exist, and each ``mnistkit.NAME`` it uses is public API."""
    import ast
    import importlib

    import mnistkit

    tree = ast.parse(source, where)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mnistkit"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: {node.module} has no {alias.name}"
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "mnistkit":
            assert node.attr in mnistkit.__all__, f"{where}: mnistkit has no {node.attr}"


@pytest.mark.parametrize("page", PAGES)
def test_every_python_example_uses_names_that_exist(page):
    for line, source in python_blocks(REPO / page):
        check_python(source, f"{page}:{line}")


# --- figures, links, length -----------------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_every_figure_names_its_results_file(page):
    problems = unsourced_figures(page, (REPO / page).read_text(encoding="utf-8"))
    assert not problems, "figures with no bench/results/ file named beside them:\n" + "\n".join(problems)


@pytest.mark.parametrize("page", PAGES)
def test_every_results_file_named_exists(page):
    named = set(RESULTS.findall((REPO / page).read_text(encoding="utf-8")))
    missing = sorted(name for name in named if not (REPO / name).is_file())
    assert not missing, f"{page} names results files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES)
def test_relative_links_lead_to_files(page):
    text = (REPO / page).read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target:
            continue
        assert (REPO / page).parent.joinpath(target).exists(), f"{page} links to {target}, which does not exist"


def test_the_readme_is_short_and_the_deep_material_has_its_pages():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"
    for name in DOC_PAGES:
        assert f"docs/{name}.md" in DOCS, f"docs/{name}.md is missing"
        assert f"](docs/{name}.md)" in "\n".join(lines), f"README.md does not link docs/{name}.md"


# --- the checkers catch what they are for ----------------------------------------------------------


def test_the_command_checker_catches_a_wrong_command():
    with pytest.raises(AssertionError, match="no command 'trian'"):
        check_command(["trian"])
    with pytest.raises(AssertionError, match="train has no option --learning-rate"):
        check_command(["train", "--learning-rate", "3"])
    with pytest.raises(AssertionError, match="--format takes one of"):
        check_command(["export", "RUN", "--format", "pickle", "--out", "m.pkl"])
    check_command(["export", "CHECKPOINT", "--format", "onnx|torchscript", "--out", "FILE"])


def test_the_python_checker_catches_a_missing_name():
    with pytest.raises(AssertionError, match="mnistkit has no train"):
        check_python("import mnistkit\nmnistkit.train(model='mlp')", "page.md:1")
    with pytest.raises(AssertionError, match="mnistkit.estimators has no LogisticRegresion"):
        check_python("from mnistkit.estimators import LogisticRegresion", "page.md:1")


def test_inline_commands_are_checked_and_error_lines_are_not_commands(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Run `mnistkit train --epochz 3`; errors start `mnistkit predict: error:`.\n")
    assert shown_commands(page) == [["train", "--epochz", "3"]]


def test_the_figure_checker_wants_a_source_beside_each_figure():
    text = """\
The recipe reaches 97.5 % in 12 s.

It reaches 97.5 % (bench/results/vm-1.json).

Measured on one machine (bench/results/vm-1.json):

| preset | test % |
|---|---|
| fast | 98.17 |

| preset | train s |
|---|---|
| fast | 1.73 |

The default is `--timeout 30s`, and the budget 1 in 100.

```nginx
client_body_timeout 10s;
```

```console
$ mnistkit train
Accuracy of the model on the 10000 test images: 96.92 %
```
"""
    assert unsourced_figures("page.md", "F1 % per class, on 28x28 images, in 2 stages.\n") == []
    problems = unsourced_figures("page.md", text)
    assert problems == [
        "page.md:1: 97.5 %",
        "page.md:1: 12 s",
        "page.md:13: | fast | 1.73 |",
        "page.md:23: 96.92 %",
    ]
