"""Every TOML config snippet and every ``slatframe run`` / ``slatframe sweep`` command line
in README.md and docs/*.md runs, at a small scale, through the command itself.

Snippets are the fenced ```toml blocks. An HTML comment on the line before a block says
more about it, ``<!-- snippet: WORD ... -->``, with these words:

- ``in=FOLDER``: the config file sits in FOLDER (from the repository root), which its
  relative paths start from (default: the repository root);
- ``file=NAME``: the text calls it NAME, and command lines of the same document that name
  NAME run it;
- ``fails``: it is meant to be refused, and must be, with one sentence (exit status 2);
- ``not-config``: TOML that is no slatframe config (pyproject.toml's); it is only parsed.

A snippet without a ``[workload]`` table is a fragment, completed with
examples/quickstart.toml: the snippet's tables are merged over the quickstart's key by key
(its values win; an array of tables it has, such as ``[[tlb.levels]]``, replaces the
quickstart's). Command lines are those in inline code and code blocks that start
``slatframe run`` or ``slatframe sweep`` followed by a ``.toml`` file (a backslash joins
lines); one whose file is neither a snippet's NAME nor a file of the repository fails.

Each runs in a temporary copy of its config's folder (its entries linked, the config
written there), so the output files a config names land there; at a small scale: every
``accesses`` of the workload (and of each ``mix`` part) is 500, ``forks`` 10,
``experiment.warmup`` 0, sweeps run in this process, and every run takes the reference
tier (``--engine reference``, unless the command names one), so no plugin kernel is
compiled (tests/test_plugin_examples.py runs the plugin examples in both tiers).
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any, Iterator

import attrs
import pytest

from slatframe.api import toml_value
from slatframe.cli import main
from slatframe.config import read_toml, tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BASE = ROOT / "examples" / "quickstart.toml"
ACCESSES, FORKS = 500, 10
WORDS = ("in", "file", "fails", "not-config")

_BLOCK = re.compile(r"^(?:<!-- snippet:(?P<marks>[^\n]*?)-->\n)?```toml\n(?P<body>.*?)^```", re.M | re.S)
_COMMAND = re.compile(r"slatframe (?:run|sweep) [^`\n|&]*")


@attrs.frozen
class Snippet:
    """A ```toml block of a document, with what its marking comment says."""

    where: str  #: document:line
    text: str
    folder: Path
    name: str | None = None
    fails: bool = False
    config: bool = True


def parse_marks(marks: str, where: str) -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    for word in marks.split():
        key, _, value = word.partition("=")
        if key not in WORDS:
            raise ValueError(f"{where}: unknown snippet word {key!r}; known: {', '.join(WORDS)}")
        out[key] = value or True
    return out


def snippets(text: str, doc: str) -> list[Snippet]:
    found = []
    for match in _BLOCK.finditer(text):
        where = f"{doc}:{text.count(chr(10), 0, match.start('body'))}"
        marks = parse_marks(match.group("marks") or "", where)
        found.append(Snippet(where, match.group("body"), ROOT / str(marks.get("in", ".")),
                             marks.get("file") or None, bool(marks.get("fails")), not marks.get("not-config")))
    return found


def commands(text: str) -> list[str]:
    """The command lines naming a .toml file, each once: in code blocks (a backslash joins
    lines) and in inline code (which may wrap)."""
    text = re.sub(r"\\\n\s*", " ", text)
    fences = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
    inline = re.findall(r"`([^`]+)`", fences.sub("", text))
    found = []
    for match in (m for part in [*fences.findall(text), *(s.replace("\n", " ") for s in inline)]
                  for m in _COMMAND.finditer(part)):
        words = shlex.split(match.group().strip())
        line = " ".join(shlex.quote(w) for w in words)
        if len(words) > 2 and words[2].endswith(".toml") and line not in found:
            found.append(line)
    return found


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged over ``base`` table by table; lists (arrays of tables) replace."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def completed(snippet: Snippet) -> str:
    """The snippet as a whole config's TOML text (a fragment merged over the quickstart)."""
    raw = tomllib.loads(snippet.text)
    if "workload" in raw:
        return snippet.text
    return "\n".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in merged(read_toml(BASE), raw).items()) + "\n"


def small(raw: dict[str, Any]) -> list[str]:
    """The ``--set`` arguments that scale a config down."""
    sets = ["experiment.warmup=0"]

    def walk(table: Any, key: str) -> Iterator[str]:
        if isinstance(table, dict):
            for name, value in table.items():
                path = f"{key}.{name}"
                if name == "accesses":
                    yield f"{path}={ACCESSES}"
                elif name == "forks":
                    yield f"{path}={FORKS}"
                else:
                    yield from walk(value, path)
        elif isinstance(table, list):
            for i, item in enumerate(table):
                yield from walk(item, f"{key}[{i}]")

    sets += walk(raw.get("workload", {}), "workload")
    return [arg for text in sets for arg in ("--set", text)]


def mirror(folder: Path, tmp: Path, name: str, text: str) -> Path:
    """``tmp/name`` holding ``text``, beside links to every other entry of ``folder``."""
    tmp.mkdir(parents=True, exist_ok=True)
    for entry in folder.iterdir():
        if entry.name != name and not (tmp / entry.name).exists():
            (tmp / entry.name).symlink_to(entry)
    (tmp / name).write_text(text)
    return tmp / name


def own_options(args: list[str]) -> list[str]:
    """A command's arguments without those the test sets itself (where output goes, how
    many processes, what is printed)."""
    out, skip = [], False
    for arg in args:
        if skip or arg in ("--json", "--quiet"):
            skip = False
            continue
        skip = arg in ("--out", "--jobs", "--executor", "--scheduler")
        if not skip:
            out.append(arg)
    return out


def run_cli(config: Path, command: str, args: list[str], tmp: Path, capsys) -> tuple[int, str]:
    """``slatframe COMMAND CONFIG ARGS`` at a small scale; its exit status and stderr."""
    raw = tomllib.loads(config.read_text())
    out = ["--out", str(tmp / ("out" if command == "sweep" else "out.json")), "--quiet"]
    engine = [] if "--engine" in args else ["--engine", "reference"]
    capsys.readouterr()
    code = main([command, str(config), *args, *small(raw), *engine, *out])
    return code, capsys.readouterr().err


def check_ran(code: int, err: str, tmp: Path, command: str, where: str) -> None:
    assert code == 0, f"{where}: {err}"
    if command == "run":
        assert json.loads((tmp / "out.json").read_text())["metrics"]["accesses"] > 0, where
    else:
        rows = json.loads((tmp / "out" / "sweep.json").read_text())
        assert rows and all(p.stat().st_size for p in (tmp / "out" / "points").glob("*.json")), where


def check_refused(code: int, err: str, where: str) -> None:
    assert code == 2, f"{where}: meant to fail, but exit status {code}"
    assert err.startswith("slatframe: error: ") and err.count("\n") == 1 and err.rstrip().endswith("."), err


SNIPPETS = [s for doc in DOCS for s in snippets(doc.read_text(), str(doc.relative_to(ROOT)))]
def distinct_commands() -> list[tuple[str, str]]:
    """(document, command line) of each command, once for the same command, file and
    options (those the test sets itself aside) wherever the docs give it."""
    seen, out = set(), []
    for doc in DOCS:
        label = str(doc.relative_to(ROOT))
        named = {s.name for s in SNIPPETS if s.name and s.where.startswith(f"{label}:")}
        for line in commands(doc.read_text()):
            words = shlex.split(line)
            key = (tuple(words[:3]), tuple(own_options(words[3:])), label if words[2] in named else "")
            if key not in seen:
                seen.add(key)
                out.append((label, line))
    return out


COMMANDS = distinct_commands()


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.where)
def test_snippet_runs_or_is_refused_as_marked(snippet, tmp_path, capsys):
    if not snippet.config:
        tomllib.loads(snippet.text)
        return
    config = mirror(snippet.folder, tmp_path / "config", snippet.name or "snippet.toml", completed(snippet))
    command = "sweep" if "sweep" in tomllib.loads(snippet.text) else "run"
    code, err = run_cli(config, command, [], tmp_path, capsys)
    if snippet.fails:
        check_refused(code, err, snippet.where)
    else:
        check_ran(code, err, tmp_path, command, snippet.where)


@pytest.mark.parametrize("doc,line", COMMANDS, ids=[f"{d}: {c}" for d, c in COMMANDS])
def test_command_line_runs(doc, line, tmp_path, capsys):
    words = shlex.split(line)
    command, name, args = words[1], words[2], words[3:]
    named = {s.name: s for s in SNIPPETS if s.name and s.where.startswith(f"{doc}:")}
    if name in named:
        folder, text = named[name].folder, completed(named[name])
    else:
        path = ROOT / name
        assert path.is_file(), f"{doc}: `{line}` names {name}, which is neither a file nor a snippet's file= name"
        folder, text = path.parent, path.read_text()
    config = mirror(folder, tmp_path / "config", Path(name).name, text)
    code, err = run_cli(config, command, own_options(args), tmp_path, capsys)
    check_ran(code, err, tmp_path, command, f"{doc}: {line}")


def test_the_collection_finds_what_it_should():
    """The docs hold snippets of each kind and commands of both kinds (a regex that stopped
    matching would make the tests above vacuous)."""
    assert len(SNIPPETS) >= 5 and any(not s.config for s in SNIPPETS) and any(s.fails for s in SNIPPETS)
    assert any(s.name for s in SNIPPETS)
    assert {c.split()[1] for _, c in COMMANDS} == {"run", "sweep"}


def test_marks_are_checked(tmp_path, capsys):
    """A snippet marked to fail that runs, and one that fails unmarked, are both caught."""
    text = ("<!-- snippet: fails -->\n```toml\n[experiment]\nname = \"fine\"\n```\n\n"
            "```toml\n[experiment]\nname = \"bad\"\nseed = -1\n```\n")
    good, bad = snippets(text, "t.md")
    assert good.fails and not bad.fails
    for snippet, expected in ((good, 0), (bad, 2)):
        config = mirror(ROOT, tmp_path / snippet.where.replace(":", "-"), "s.toml", completed(snippet))
        code, err = run_cli(config, "run", [], tmp_path, capsys)
        assert code == expected, err
    with pytest.raises(AssertionError):
        check_refused(0, "", good.where)
    with pytest.raises(ValueError, match="unknown snippet word 'failz'"):
        snippets("<!-- snippet: failz -->\n```toml\n```\n", "t.md")
    assert commands("run `slatframe run a.toml --set 'x=1'` and `slatframe sweep\nc.toml`\n```\nslatframe sweep "
                    "b.toml \\\n  --out d\n```\nbut not `slatframe run CONFIG` nor slatframe run / sweep") == \
        ["slatframe sweep b.toml --out d", "slatframe run a.toml --set x=1", "slatframe sweep c.toml"]
