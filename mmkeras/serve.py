"""Serve exported models over TF Serving's REST and gRPC APIs, locally (development and tests).

Production runs the ``tensorflow/serving`` image (``export/docker-compose.yml``); this server
answers the same calls, with the same formats and error shapes, where that binary is not
installed. Port 0 picks a free port; the first stdout line is a JSON object with the ports.

Examples:
    python -m mmkeras.serve --model-base-path runs/X/export --model-name mmkeras_model
    python -m mmkeras.serve --model-base-path /srv/models/mmkeras_model --model-name \
        mmkeras_model --rest-port 0 --grpc-port 0 --label stable=3
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from mmkeras.cli import Parser


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; runs until SIGINT or SIGTERM."""
    parser = Parser(
        prog="python -m mmkeras.serve",
        description="Local TF Serving protocol server (REST + gRPC) over SavedModel versions.",
    )
    parser.add_argument("--model-base-path", required=True,
                        help="export base (holding <name>/) or the model folder (holding 1/, 2/)")
    parser.add_argument("--model-name", required=True, help="model name in request URLs/specs")
    parser.add_argument("--rest-port", type=int, default=8501, help="REST port (default 8501)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (default 8500)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--poll-seconds", type=float, default=1.0,
                        help="how often to look for new versions (default 1 s)")
    parser.add_argument("--max-request-bytes", type=int, default=16 * 2**20,
                        help="larger requests are refused with 400 (default 16 MiB)")
    parser.add_argument("--client-timeout", type=float, default=30.0,
                        help="close a REST connection silent this long, e.g. a body never "
                             "sent in full (default 30 s)")
    parser.add_argument("--label", action="append", default=[], metavar="NAME=VERSION",
                        help="version label, e.g. stable=3 (repeatable)")
    args = parser.parse_args(argv)
    labels = {}
    for item in args.label:
        name, _, version = item.partition("=")
        if not name or not version.isdigit():
            parser.error(f"--label {item!r}: expected NAME=VERSION, e.g. stable=3")
        labels[name] = int(version)

    from mmkeras.serving.server import LocalServer

    server = LocalServer(args.model_base_path, args.model_name, args.rest_port, args.grpc_port,
                         args.host, args.poll_seconds, args.max_request_bytes, labels,
                         log=lambda m: print(m, file=sys.stderr, flush=True),
                         client_timeout=args.client_timeout)
    server.start()
    print(json.dumps({"event": "ready", "rest_port": server.rest_port,
                      "grpc_port": server.grpc_port, "model_name": args.model_name,
                      "versions": sorted(server.repository.versions)}), flush=True)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
