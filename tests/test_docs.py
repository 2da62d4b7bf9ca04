"""The docs stay true to the code."""
from __future__ import annotations

import re
from pathlib import Path

from slatframe import hookspecs
from slatframe.docgen import config_reference, hook_reference
from slatframe.registry import Registry

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_current():
    assert (ROOT / "docs/configuration.md").read_text() == config_reference(Registry()), \
        "run: python -m slatframe.docgen > docs/configuration.md"


def test_hook_reference_is_current_and_complete():
    text = (ROOT / "docs/hooks.md").read_text()
    assert text == hook_reference(), "run: python -m slatframe.docgen hooks > docs/hooks.md"
    for name in dir(hookspecs):
        if name.startswith("slatframe_"):
            assert f"`{name}(" in text


def test_plugin_guide_shows_the_example_file_verbatim():
    guide = (ROOT / "docs/plugin-authors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", guide, re.S)
    example = (ROOT / "examples/plugins/lfu_policy.py").read_text()
    assert example in blocks
    assert len(example.splitlines()) < 30


def test_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text().splitlines()
    assert readme[:4] == ["```", "pip install -e . && slatframe run examples/quickstart.toml",
                          'pip install -e ".[test]" && pytest', "```"]
    assert readme[2] in (ROOT / ".ci/run").read_text().splitlines()
