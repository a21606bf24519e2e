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
            raise argparse.ArgumentTypeError(f"{text} is outside {'(' if low_open else '['}{low:g}, {high:g}]")
        return value
    return parse
