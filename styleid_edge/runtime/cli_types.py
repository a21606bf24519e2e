"""argparse value types shared by the command-line tools (``anonymize``, ``live``)."""

from __future__ import annotations

import argparse
from typing import Callable


def number_in(kind: type, low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """argparse type: a number of ``kind`` in [low, high] (or (low, high] with ``low_open``)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if value > high or value < low or (low_open and value == low):
            lo, hi = (f"{low:g}", f"{high:g}") if kind is float else (int(low), int(high))
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}{lo}, {hi}]")
        return value
    return parse


def angle_list(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated angles in degrees within [-180, 180] ("none" or "": no angle)."""
    if text.strip().lower() in ("", "none", "0"):
        return ()
    angles = []
    for part in text.split(","):
        try:
            angle = float(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not an angle in degrees (e.g. -30,30,90,-90)")
        if not -180.0 <= angle <= 180.0:
            raise argparse.ArgumentTypeError(f"{part} is outside [-180, 180] degrees")
        angles.append(angle)
    return tuple(angles)
