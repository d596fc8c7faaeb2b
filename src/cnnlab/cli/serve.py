"""`cnnlab serve [RUN]`: the web page and JSON API (predict, explain, convolve) on this machine, under uvicorn."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="web page and prediction server: draw or upload, see inside the network, play with kernels",
        description="Start a local web app at http://HOST:PORT/ with a JSON API under /api (docs at /docs). "
        "Without RUN it serves a LeNet trained on the bundled digits, trained once at the first start "
        "(a few seconds) and cached.",
        epilog="examples:\n  cnnlab serve\n  cnnlab serve last --port 8080\n  cnnlab serve runs/mnist/model.onnx\n"
        "  curl -F image=@digit.png 'http://127.0.0.1:8000/api/predict?topk=3'",
    )
    p.add_argument("run", nargs="?", default=None,
                   help="run folder (runs/...; last: the newest run) or checkpoint file; an exported .onnx or "
                   ".torchscript model serves predictions only (default: the digits model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest accepted upload in MiB (default: 10)")
    p.add_argument("--max-pixels", type=int, default=None,
                   help="largest accepted image in pixels, checked before decoding (default: 25,000,000)")
    p.add_argument("--trust-code", action="store_true",
                   help="allow a TorchScript model: loading one runs the code inside it (only for trusted files)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level (default: info)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cnnlab.errors import CnnlabError

    try:
        import uvicorn

        from cnnlab.apps.serve.app import create_app
        from cnnlab.apps.serve.state import ServedModel, default_run_dir
        from cnnlab.apps.serve.uploads import MAX_PIXELS
    except ImportError as exc:
        raise CnnlabError(f"serving needs the serve extra ({exc.name} is missing): pip install 'cnnlab[serve]'") \
            from None
    if not 1 <= args.port <= 65535:
        raise CnnlabError(f"--port must be from 1 to 65535, got {args.port}")
    if args.max_upload_mb <= 0:
        raise CnnlabError(f"--max-upload-mb must be positive, got {args.max_upload_mb}")
    check_port_free(args.host, args.port)  # before a model is loaded, and before the URL is printed
    if args.run is None and not default_run_dir().exists():
        print(f"training the default model (LeNet on the bundled digits) into {default_run_dir()} ...", flush=True)
    model = ServedModel.load(args.run, trust_code=args.trust_code)
    print(f"serving {model.name}: {model.source}", flush=True)
    app = create_app(model=model, max_upload_bytes=int(args.max_upload_mb * 2**20),
                     max_pixels=args.max_pixels or MAX_PIXELS)
    print(f"open http://{_url_host(args.host)}:{args.port}/  (API docs at /docs; Ctrl+C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def check_port_free(host: str, port: int) -> None:
    """One clear line when the address is taken, instead of uvicorn's error after the URL was already printed."""
    import socket

    from cnnlab.errors import CnnlabError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: a socket in TIME_WAIT is fine
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise CnnlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (another server there?); "
                              f"choose another --port") from None


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
