"""Run the Python code blocks of README.md and of every tutorial in docs/ as tests (Sybil), so none of them can rot.

The blocks of one page share one namespace and run in order, in a fresh temporary folder (the
pictures and files a page writes go there), with matplotlib drawing off screen.  A block that
needs Graphviz's ``dot`` or torch follows ``<!-- skip: next if(not has_dot, reason="...") -->``
(or ``has_torch``): it is skipped, and says why, where they are missing.  ``<!-- clear-namespace -->``
starts a section of README.md afresh: each section's blocks run on the imports its first block states.
"""
import importlib.util
import os
import shutil
import tempfile

from sybil import Sybil
from sybil.parsers.markdown import ClearNamespaceParser, PythonCodeBlockParser, SkipParser

_FLAGS = ("has_dot", "has_torch", "_previous_folder", "_folder")  # what clearing a section keeps


def _setup(namespace):
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace["has_dot"] = shutil.which("dot") is not None
    namespace["has_torch"] = importlib.util.find_spec("torch") is not None
    namespace["_previous_folder"] = os.getcwd()
    namespace["_folder"] = tempfile.mkdtemp(prefix="minigrad-docs-")
    os.chdir(namespace["_folder"])


def _teardown(namespace):
    os.chdir(namespace["_previous_folder"])
    shutil.rmtree(namespace["_folder"], ignore_errors=True)


class _ClearSection(ClearNamespaceParser):
    """``<!-- clear-namespace -->``, keeping what the set-up put there (the flags, the folder)."""

    @staticmethod
    def evaluate(example):
        namespace = example.document.namespace
        kept = {name: namespace[name] for name in _FLAGS if name in namespace}
        namespace.clear()
        namespace.update(kept)


pytest_collect_file = Sybil(parsers=[PythonCodeBlockParser(), SkipParser(), _ClearSection()],
                            patterns=["README.md", "docs/*.md"], setup=_setup, teardown=_teardown).pytest()
