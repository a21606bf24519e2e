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
