"""Torch-free runtime: backends, detection, alignment, tracking, StyleID methods, blending, video I/O."""
