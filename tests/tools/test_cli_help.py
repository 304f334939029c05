"""Every command-line tool: its --help explains every flag, and its usage names the way to run it."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "tools"
SCRIPTS = sorted(TOOLS.glob("*.py")) + sorted((TOOLS / "zoo").glob("*.py"))


class _Parsed(Exception):
    """Raised instead of parsing: the tool built its parser and asked for its arguments."""


def _parser_of(script: Path, monkeypatch) -> argparse.ArgumentParser | None:
    """The parser `script`'s main() builds (None: the file is a helper module without main)."""
    seen: list[argparse.ArgumentParser] = []

    def capture(self, args=None, namespace=None):  # noqa: ANN001, ANN202
        seen.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.syspath_prepend(str(script.parent))  # zoo actions import their sibling helpers
    spec = importlib.util.spec_from_file_location(f"cli_help_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        return None
    with pytest.raises(_Parsed):
        module.main([])
    return seen[-1]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_flag_is_explained(script, monkeypatch):
    parser = _parser_of(script, monkeypatch)
    if parser is None:
        assert "def main" not in script.read_text(), f"{script.name} has a main() the test did not reach"
        return
    unexplained = [
        "/".join(action.option_strings) or action.dest
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()
    ]
    assert not unexplained, f"{script.name}: flags without help: {unexplained}"
    flags = [s for action in parser._actions for s in action.option_strings if s.startswith("--")]
    # argparse's BooleanOptionalAction adds "--no-<flag>"; the flag itself has underscores.
    hyphenated = [flag for flag in flags if "-" in flag.replace("--no-", "--", 1)[2:]]
    assert not hyphenated, f"{script.name}: flags are spelled with underscores here: {hyphenated}"
    if script.parent == TOOLS:  # the tools users run: usage says how
        assert parser.prog == f"bazel run //tools:{script.stem} --", parser.prog


def test_the_tools_are_found():
    assert {"export.py", "generate.py", "benchmark.py", "compare_pte.py"} <= {p.name for p in SCRIPTS}
