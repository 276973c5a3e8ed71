"""Run the Python code blocks of every tutorial in docs/ as tests (Sybil), so none of them can rot.

The blocks of one page share one namespace and run in order, in a fresh temporary folder (the
pictures and files a tutorial writes go there), with matplotlib drawing off screen.  A block that
renders with Graphviz follows ``<!-- skip: next if(not has_dot, reason="...") -->``: it is skipped,
and says why, on a machine without the ``dot`` program.
"""
import os
import shutil
import tempfile

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser, SkipParser


def _setup(namespace):
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace["has_dot"] = shutil.which("dot") is not None
    namespace["_previous_folder"] = os.getcwd()
    namespace["_folder"] = tempfile.mkdtemp(prefix="minigrad-docs-")
    os.chdir(namespace["_folder"])


def _teardown(namespace):
    os.chdir(namespace["_previous_folder"])
    shutil.rmtree(namespace["_folder"], ignore_errors=True)


pytest_collect_file = Sybil(parsers=[PythonCodeBlockParser(), SkipParser()], patterns=["*.md"], setup=_setup,
                            teardown=_teardown).pytest()
