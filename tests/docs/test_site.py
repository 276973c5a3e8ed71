"""The documentation site builds with ``mkdocs build --strict``: every page in the nav, every link
and every API page generated from the docstrings (the tutorials' code runs in conftest.py); its math is
MathML written at build time, so the built site needs no network."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strictly(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail("mkdocs-material and mkdocstrings are not installed (the test extra has them)")
        pytest.skip("mkdocs-material and mkdocstrings are not installed")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    for page in ("index.html", "bptt/index.html", "why-lstms/index.html", "api/index.html"):
        assert (tmp_path / "site" / page).is_file()
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "check_cell" in api and "to_dot" in api and "scan" in api
    bptt = (tmp_path / "site" / "bptt" / "index.html").read_text()
    # offline, MathJax from a CDN left raw TeX: now every formula is MathML, and no page loads a script from the web
    assert bptt.count('display="block">') >= 3 and "<mi>W</mi>" in bptt and "\\[" not in bptt
    for page in (tmp_path / "site").rglob("*.html"):
        assert not re.search(r'<script[^>]+src="https?://', page.read_text()), page
