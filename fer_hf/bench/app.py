"""The app under a burst of photo requests: ok, refused with a message, failed; latency; still up afterwards.

    python -m fer_hf.bench app [--clients 8] [--requests 2] [--model default]
    python -m fer_hf.bench app --quick          # 3 clients x 1 request, the tests' size

Starts `spaces_app/app.py` in a subprocess on 127.0.0.1 only (a free port, offline), then `--clients` threads each
send `--requests` photo requests at once (skimage's astronaut, the Predict tab's `/predict` endpoint, through
`gradio_client`). Gradio's queue runs them one at a time (the app's concurrency limit) and refuses those beyond its
queue size with a message.

Each request ends as: ok (annotated faces and a status without a warning), refused (Gradio or the app answered
with a message: queue full, a sentence from a handler), or failed (no answer, a connection error, an error without
a message). Latency is from sending to the answer, for the ok ones. After the burst the server must still answer
its page. The last line is `app: N clients x R: ok A, refused B, failed C; median M s, max X s; server up`.
"""

from __future__ import annotations

import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fer_hf.bench import at_least, bench_parser

APP = Path(__file__).resolve().parents[2] / "spaces_app" / "app.py"
START_TIMEOUT_S = 300  # torch + transformers + gradio imports on 2 busy cores


@dataclass
class Outcome:
    kind: str  # "ok", "refused", "failed"
    seconds: float
    message: str = ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def is_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def start_app(model: str, log: Path) -> tuple[subprocess.Popen, str]:
    """The app on 127.0.0.1 (never another interface) with `model`; returns once its page answers."""
    port = free_port()
    env = {
        **os.environ,
        "FER_HF_MODELS": model,
        "GRADIO_SERVER_NAME": "127.0.0.1",
        "GRADIO_SERVER_PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "HF_HUB_OFFLINE": "1",
    }
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(APP)], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode} during start-up: {log.read_text()[-500:]}")
        if is_up(url):
            return proc, url
        time.sleep(0.5)
    stop_app(proc)
    raise RuntimeError(f"the app did not answer on {url} within {START_TIMEOUT_S} s (its log: {log})")


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_request(url: str, photo: Path, model: str) -> Outcome:
    """One photo through the app's /photo endpoint with a client of its own (as one browser would)."""
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        out = client.predict(handle_file(str(photo)), model, "none", api_name="/photo")  # a dict
    except Exception as err:  # noqa: BLE001  (each way a request can end is counted, none stops the burst)
        message = " ".join(str(err).split())
        refused = bool(message) and type(err).__name__ in ("AppError", "QueueError", "TooManyRequestsError")
        return Outcome("refused" if refused else "failed", time.perf_counter() - start, message or type(err).__name__)
    seconds = time.perf_counter() - start
    warned = bool(out.get("warning"))  # the app answered with a sentence instead of faces
    return Outcome("refused" if warned else "ok", seconds, str(out.get("message", "")) if warned else "")


def burst(url: str, photo: Path, model: str, clients: int, requests: int) -> list[Outcome]:
    """clients x requests requests, all sent at once (a bounded burst: at most clients in flight)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(one_request, url, photo, model) for _ in range(clients * requests)]
        return [future.result() for future in futures]


def summary(outcomes: list[Outcome], clients: int, requests: int, up: bool) -> str:
    counts = {kind: sum(o.kind == kind for o in outcomes) for kind in ("ok", "refused", "failed")}
    latencies = [o.seconds for o in outcomes if o.kind == "ok"]
    timing = f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s" if latencies else "no answer"
    return (
        f"app: {clients} clients x {requests}: ok {counts['ok']}, refused {counts['refused']}, failed "
        f"{counts['failed']}; {timing}; server {'up' if up else 'DOWN'}"
    )


def parse_args(argv: Sequence[str] | None):
    parser = bench_parser("app", __doc__)
    parser.add_argument("--clients", type=at_least(1), default=8, help="concurrent clients (threads)")
    parser.add_argument("--requests", type=at_least(1), default=2, help="photo requests per client")
    parser.add_argument("--model", default="default", help="the app's model (FER_HF_MODELS): bundled name or folder")
    parser.add_argument("--quick", action="store_true", help="3 clients x 1 request (the tests' size)")
    args = parser.parse_args(argv)
    if args.quick:
        args.clients, args.requests = 3, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    with tempfile.TemporaryDirectory(prefix="fer_bench_app_") as tmp:
        photo = Path(tmp) / "astronaut.png"
        Image.fromarray(np.asarray(skdata.astronaut())).save(photo)
        proc, url = start_app(args.model, Path(tmp) / "server.log")
        try:
            outcomes = burst(url, photo, args.model, args.clients, args.requests)
            up = proc.poll() is None and is_up(url)
        finally:
            stop_app(proc)
    for outcome in outcomes:
        if outcome.kind != "ok":
            print(f"{outcome.kind} after {outcome.seconds:.2f} s: {outcome.message[:200]}")
    print(summary(outcomes, args.clients, args.requests, up))
    return 0 if up else 1


if __name__ == "__main__":
    from fer_hf.cli import run

    raise SystemExit(run(main))
