"""``styleid-edge serve`` and ``styleid-edge export triton``.

Wire into the main CLI with ``register_serve(subparsers)`` and
``register_export_triton(export_subparsers)``.
"""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pack", required=True, help="model pack directory to serve")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0 = all "
                                                       "interfaces, for appliances on other machines)")
    p.add_argument("--port", "--grpc-port", dest="grpc_port", type=int, default=8001,
                   help="gRPC port (default 8001); what appliances pass as --url HOST:PORT")
    p.add_argument("--http-port", type=int, default=8000, help="HTTP port: health /v2/health/ready (default 8000)")
    p.add_argument("--metrics-port", type=int, default=8002, help="Prometheus /metrics port (default 8002)")
    p.add_argument("--max-batch", type=int, default=32, help="largest batch per model run (default 32)")
    p.add_argument("--max-queue-delay-us", type=int, default=2000,
                   help="how long the dynamic batcher waits to fill a batch, microseconds (default 2000)")
    p.add_argument("--no-dynamic-batching", action="store_true", help="run each request on its own")
    p.add_argument("--instances", type=int, default=1, help="model instances (parallel runs) per model")
    p.add_argument("--providers", default="cpu", help="ONNX Runtime providers in order, e.g. cuda,cpu")
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: all cores)")
    p.add_argument("--model-prefix", default="", help="prefix of the Triton model names (default none)")
    p.add_argument("--roles", help="comma-separated pack roles to serve (default: encoder, mapping, affine, "
                                   "synthesis and mapper, those the pack has)")


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import ServeConfig, serve_forever

    config = ServeConfig(pack=args.pack, host=args.host, grpc_port=args.grpc_port, http_port=args.http_port,
                         metrics_port=args.metrics_port, max_batch=args.max_batch,
                         max_queue_delay_us=args.max_queue_delay_us, dynamic_batching=not args.no_dynamic_batching,
                         instances=args.instances, providers=args.providers, intra_op_threads=args.threads,
                         model_prefix=args.model_prefix,
                         roles=[r.strip() for r in args.roles.split(",") if r.strip()] if args.roles else None)

    def ready(server) -> None:
        print(f"serving {', '.join(m.name for m in server.models)} from {server.pack.root}", flush=True)
        print(f"  appliances: --backend triton --url {server.grpc_url}"
              + (f" --backend-option model_prefix={args.model_prefix}" if args.model_prefix else ""), flush=True)
        print(f"  health: http://{server.http_url}/v2/health/ready   metrics: {server.metrics_url}", flush=True)
        print("  Ctrl+C (SIGINT) or SIGTERM stops it", flush=True)

    return serve_forever(config, ready)


def register_serve(subparsers) -> None:
    """Add the top-level ``serve`` command."""
    p = subparsers.add_parser("serve", help="serve the pack's encoder/mapper/generator to appliances with "
                                            "Triton Inference Server (needs the serve extra)")
    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)


def cmd_export_triton(args: argparse.Namespace) -> int:
    from .repository import RepositoryConfig, docker_command, write_repository

    config = RepositoryConfig(platform=args.platform, plans=args.plans, max_batch=args.max_batch,
                              max_queue_delay_us=args.max_queue_delay_us, instances=args.instances,
                              kind=args.kind, model_prefix=args.model_prefix, ensemble=not args.no_ensemble,
                              overwrite=args.force)
    written = write_repository(args.pack, args.out, config)
    print(f"Triton model repository: {args.out}")
    for model in written:
        print(f"  {model}")
    print("run it on a GPU server with the official Triton container:")
    print("  " + docker_command(args.out))
    return 0


def register_export_triton(export_subparsers) -> None:
    """Add ``export triton`` to the ``export`` command's sub-commands."""
    p = export_subparsers.add_parser("triton", help="write a Triton model repository from a pack")
    p.add_argument("--pack", required=True, help="model pack directory")
    p.add_argument("--out", required=True, help="model repository directory to write")
    p.add_argument("--platform", choices=["onnxruntime", "onnxruntime-trt", "tensorrt"], default="onnxruntime",
                   help="onnxruntime: onnxruntime_onnx models; onnxruntime-trt: the same with ONNX Runtime's "
                        "TensorRT accelerator; tensorrt: tensorrt_plan models from --plans")
    p.add_argument("--plans", help="with --platform tensorrt: folder with ROLE.plan (or ROLE.engine) files built "
                                   "for the server's GPU and TensorRT version")
    p.add_argument("--max-batch", type=int, default=32)
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--instances", type=int, default=1, help="instance_group count per model")
    p.add_argument("--kind", choices=["gpu", "cpu"], default="gpu", help="instance_group kind (default gpu)")
    p.add_argument("--model-prefix", default="")
    p.add_argument("--no-ensemble", action="store_true", help="write only the per-stage models")
    p.add_argument("--force", action="store_true", help="replace an existing repository directory")
    p.set_defaults(func=cmd_export_triton)
