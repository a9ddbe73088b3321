"""``fastnst serve``: the HTTP API and web page, until Ctrl-C."""

from __future__ import annotations

import argparse
import os
import sys

from fastnst.cli.options import positive_int


def add_serve(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("serve", help="serve models over HTTP: a stylize API and a web page",
                       description="Serve style models over HTTP: POST /v1/stylize, GET /v1/models, /healthz, "
                                   "/metrics, the API's documentation at /docs and a web page at /. Models load "
                                   "once; requests share one bounded queue (503 when full). Ctrl-C stops.")
    p.set_defaults(run=_run_serve)
    if not options:
        return
    from fastnst.backends import BACKEND_CHOICES
    from fastnst.device import DEVICE_CHOICES
    from fastnst.serve import config as defaults

    p.add_argument("-m", "--model", action="append", default=[], dest="models", metavar="MODEL",
                   help=f"a model file to serve, under its file name; repeat for more (default: every model in "
                        f"{defaults.BUNDLED})")
    g = p.add_argument_group("network")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    g.add_argument("--api-key", help=f"require this key (header 'Authorization: Bearer KEY' or 'X-API-Key: KEY') "
                                     f"on /v1/* and /metrics; default ${defaults.API_KEY_ENV}, which other users "
                                     "cannot read in the process list as they can this option")
    g.add_argument("--insecure", action="store_true",
                   help="allow a --host other machines can reach without an API key")
    g.add_argument("--cors-origin", action="append", default=[], dest="cors_origins", metavar="ORIGIN",
                   help="let web pages from ORIGIN (https://example.org) call the API; repeat for more "
                        "(default: none)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-upload-mb", type=float, default=defaults.DEFAULT_UPLOAD_MB,
                   help="refuse larger uploads with 413 (default %(default)g)")
    g.add_argument("--max-pixels", type=positive_int, default=defaults.DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels with 413, read from the header before decoding "
                        f"(default {defaults.DEFAULT_MAX_PIXELS:,})")
    g.add_argument("--timeout", type=float, default=defaults.DEFAULT_TIMEOUT,
                   help="seconds a request may take before it is answered 504 (default %(default)g)")
    g.add_argument("--queue-size", type=positive_int, default=defaults.DEFAULT_QUEUE_SIZE,
                   help="requests in the service at once; one more is answered 503 (default %(default)s)")
    g = p.add_argument_group("speed")
    g.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="runtime (default auto)")
    g.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    g.add_argument("--workers", type=positive_int,
                   help="CPU: photos stylized at once, one core each (default: the backend's streams)")
    g.add_argument("--batch-size", type=positive_int,
                   help="photos of one size and look per pass (default 1 on the CPU, 8 on a GPU)")
    g.add_argument("--batch-wait-ms", type=float, default=defaults.DEFAULT_BATCH_WAIT_MS,
                   help="how long a batch waits for more photos (default %(default)g)")


def _run_serve(args: argparse.Namespace) -> int:
    from fastnst.serve import ServeConfig, require_stack
    from fastnst.serve.config import API_KEY_ENV

    config = ServeConfig(
        models=tuple(args.models), host=args.host, port=args.port,
        api_key=args.api_key or os.environ.get(API_KEY_ENV) or None, insecure=args.insecure,
        cors_origins=tuple(args.cors_origins), backend=args.backend, device=args.device,
        max_upload_mb=args.max_upload_mb, max_pixels=args.max_pixels, timeout=args.timeout,
        queue_size=args.queue_size, workers=args.workers, batch_size=args.batch_size,
        batch_wait_ms=args.batch_wait_ms)
    require_stack()
    from fastnst.serve.app import create_app, listen, run, url

    app = create_app(config)
    sock = listen(config)
    if config.exposed:
        print(f"fastnst serve: warning: anyone who can reach {config.host} may use this server (--insecure)",
              file=sys.stderr)
    print(f"fastnst serve: {', '.join(config.model_names)} at {url(sock)} (API docs at {url(sock)}docs; "
          "Ctrl-C stops)", file=sys.stderr, flush=True)
    run(app, sock)
    return 0
