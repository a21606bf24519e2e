"""Official pretrained files: download (`models fetch`), cache, and turn into a pack (`models build`).

``registry`` and ``download`` are torch-free; ``build`` imports the export package lazily.
"""

from .registry import OFFICIAL_FILES, WeightFile, get_file

__all__ = ["OFFICIAL_FILES", "WeightFile", "get_file"]
