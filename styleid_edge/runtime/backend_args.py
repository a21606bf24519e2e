"""The ``--backend`` / ``--url`` / ``--backend-option`` flags shared by ``anonymize`` and ``live``."""

from __future__ import annotations

import argparse

from .backends import BACKENDS, parse_backend_options


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend / --url / --backend-option, shared by anonymize and live."""
    p.add_argument("--backend", default="onnxruntime",
                   choices=list(BACKENDS),
                   help="what runs the pack's models (default onnxruntime, on --providers)")
    p.add_argument("--url", help="with --backend triton: HOST:PORT of the Triton server(s), comma-separated")
    p.add_argument("--backend-option", action="append", default=[], metavar="KEY=VALUE",
                   help="backend setting, repeatable (e.g. fp16=1, device=cuda, cache_dir=DIR, protocol=http)")


def backend_config(args: argparse.Namespace, long_running: bool = True) -> dict:
    """AnonymizerConfig keyword arguments for the backend flags.

    ``long_running=False`` (files): the torch backend skips ``torch.compile`` unless ``compile`` is given.
    Compiling costs about 10-20 s per batch size at the start (measured: a 50-frame 1080p clip at 256 px on an
    H200 spent 41 s of its first 23 frames compiling), which a file job earns back only after many minutes of
    footage; a live stream (which compiles before its sources open) or a benchmark does.
    """
    options = parse_backend_options(args.backend_option)
    if not long_running and args.backend == "torch" and "compile" not in options:
        options["compile"] = False
    if args.url and args.backend != "triton":
        raise ValueError(f"--url is the Triton server's address: add --backend triton, or drop --url "
                         f"(the {args.backend} backend runs the models here)")
    if args.url:
        options["url"] = args.url
    if args.backend == "triton" and "url" not in options:
        raise ValueError("--backend triton needs --url HOST:PORT of a Triton server (see styleid-edge serve)")
    return {"backend": args.backend, "backend_options": options}
