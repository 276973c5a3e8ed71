"""README.md's code, as a newcomer uses it: every block pastes into the Python REPL as written (the
blocks also run, section by section, through Sybil: see conftest.py)."""
import codeop
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(path: Path) -> list:
    """(line number, source) of each ```python block of a Markdown page."""
    text = path.read_text(encoding="utf-8")
    return [(text[:m.start()].count("\n") + 2, m.group(1)) for m in re.finditer(r"```python\n(.*?)```", text, re.S)]


def repl_error(source: str):
    """The SyntaxError the interactive interpreter gives when ``source`` is pasted line by line, or
    None: as ``code.InteractiveConsole.push``, a statement runs once complete, and a compound one is
    complete at a blank line (a dedented line right after an indented block is an error there)."""
    buffer = []
    for line in source.splitlines() + [""]:
        if not buffer and not line.strip():
            continue
        buffer.append(line)
        try:
            code = codeop.compile_command("\n".join(buffer), "<stdin>", "single")
        except SyntaxError as error:
            return error
        if code is not None:
            buffer = []
    return None


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_every_code_block_pastes_into_the_repl(path):
    for line, source in _blocks(path):
        error = repl_error(source)
        assert error is None, f"{path.name}:{line + (error.lineno or 1) - 1}: {error.msg}"


# The widest code line a tutorial's code box shows whole on a 1280 px screen (both sidebars shown):
# 82 characters, measured in headless Chromium; a longer one is clipped behind a scroll bar.
SITE_CODE_WIDTH = 80


@pytest.mark.parametrize("path", PAGES[1:], ids=lambda p: p.name)
def test_the_tutorials_code_lines_fit_their_boxes_on_the_site(path):
    for line, source in _blocks(path):
        for k, text in enumerate(source.splitlines()):
            assert len(text) <= SITE_CODE_WIDTH, f"{path.name}:{line + k}: {len(text)} characters: {text}"


def test_the_repl_check_catches_what_a_paste_breaks_on():
    assert repl_error("for x in range(2):\n    print(x)\nprint('after')\n") is not None  # no blank line after
    assert repl_error("class A:\n    x = 1\n\n    def f(self):\n        pass\n") is not None  # a blank line inside
    assert repl_error("for x in range(2):\n    print(x)\n\nprint('after')\nclass A:\n    x = 1\n") is None
