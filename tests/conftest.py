"""Shared fixtures: a tiny random model pack (made once per session), the real recognizer, test clips."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
sys.path.insert(0, str(TESTS))  # `import media` and the reference implementations
PHOTOS = TESTS / "data" / "photos"


@pytest.fixture(scope="session")
def tiny_pack(tmp_path_factory):
    """A 32 px synthetic pack with encoder, mapper and recognizer, through the real checkpoint layouts."""
    pytest.importorskip("torch")
    from styleid_edge.export.pack_writer import make_synthetic_pack

    return make_synthetic_pack(tmp_path_factory.mktemp("packs") / "tiny32", resolution=32, channel_multiplier=1,
                               seed=0, recognizer=True)


@pytest.fixture(scope="session")
def sface():
    from styleid_edge.runtime.recognize import SFace

    return SFace()


@pytest.fixture(scope="session")
def yunet():
    from styleid_edge.runtime.detect import make_detector

    return make_detector("yunet")


# --- CI: only GPU/TensorRT tests may skip -----------------------------------------------------
# .ci/run sets STYLEID_EDGE_CI=1 after installing every optional part that runs on a CPU (Triton,
# Ray, OpenVINO, the C++ toolchain). Any other skip there means a missing install, not a passing test.
_ALLOWED_CI_SKIPS = ("gpu", "cuda", "tensorrt", "nvidia", "display")
_ci_skips: list[str] = []


def _note_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = str(report.longrepr[-1]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(word in reason.lower() for word in _ALLOWED_CI_SKIPS):
            _ci_skips.append(f"{report.nodeid}: {reason}")


def pytest_collectreport(report):
    _note_skip(report)


def pytest_runtest_logreport(report):
    _note_skip(report)


def pytest_sessionfinish(session, exitstatus):
    import os

    if os.environ.get("STYLEID_EDGE_CI") and _ci_skips and exitstatus == 0:
        print("\nSTYLEID_EDGE_CI: these tests were skipped but must run in CI (install what they name):\n  "
              + "\n  ".join(_ci_skips))
        session.exitstatus = 1
