"""Shared test configuration: Hypothesis profiles and the ../shared data directory.

Profiles: "ci" (derandomized, 25 examples, no deadline) is loaded when the CI
environment variable is set (CI=true), "dev" (30 random examples) otherwise;
HYPOTHESIS_PROFILE=<name> overrides either.
"""
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# no deadlines: timings on a shared 2-core machine are noise, not failures
settings.register_profile(
    "ci", deadline=None, derandomize=True, max_examples=25, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=30)
_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _CI else "dev"))

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"


def _require_shared(relative: str = "") -> Path:
    """``../shared/<relative>``; skip when absent, but fail when MINIGRAD_REQUIRE_SHARED=1
    (so CI that provides the data cannot silently skip)."""
    path = SHARED_DIR / relative
    if not path.exists():
        reason = f"shared data not found: {path}"
        if os.environ.get("MINIGRAD_REQUIRE_SHARED") == "1":
            pytest.fail(f"{reason} (MINIGRAD_REQUIRE_SHARED=1)")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_dir() -> Path:
    """The ../shared directory next to the checkout (data sets, reference outputs)."""
    return _require_shared()


@pytest.fixture
def shared_file():
    """``shared_file("data/...")``: the path of one file in ../shared, skipping or failing as ``shared_dir``."""
    return _require_shared
