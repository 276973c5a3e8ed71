"""Run the Python code blocks of every tutorial in docs/ as tests (Sybil), so none of them can rot.

The blocks of one page share one namespace and run in order, in a fresh temporary folder (the
pictures and files a tutorial writes go there), with matplotlib drawing off screen.
"""
import os
import shutil
import tempfile

from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser


def _setup(namespace):
    os.environ.setdefault("MPLBACKEND", "Agg")
    namespace["_previous_folder"] = os.getcwd()
    namespace["_folder"] = tempfile.mkdtemp(prefix="minigrad-docs-")
    os.chdir(namespace["_folder"])


def _teardown(namespace):
    os.chdir(namespace["_previous_folder"])
    shutil.rmtree(namespace["_folder"], ignore_errors=True)


pytest_collect_file = Sybil(parsers=[PythonCodeBlockParser()], patterns=["*.md"], setup=_setup,
                            teardown=_teardown).pytest()
