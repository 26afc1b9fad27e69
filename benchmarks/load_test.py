"""Bounded, loopback-only load test of ``pcnn serve``: N requests at concurrency C (httpx async), reporting latency
percentiles, throughput and errors.

    python benchmarks/load_test.py                         # starts its own server (bundled model, or a random
                                                           # compact PCNN when the bundled one is missing)
    python benchmarks/load_test.py --backend onnx --requests 200 --concurrency 20
    python benchmarks/load_test.py --url http://127.0.0.1:8000   # an already running server (loopback only)

Only loopback targets are accepted (127.0.0.0/8, ::1, localhost); the request count is capped at 5000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
MAX_REQUESTS = 5000
MAX_CONCURRENCY = 200


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def run_load(url: str, data: bytes, name: str, requests: int, concurrency: int, timeout: float) -> dict:
    """Send ``requests`` uploads with at most ``concurrency`` in flight; latency (s) per request and errors."""
    import httpx

    latencies: list[float] = []
    statuses: dict[str, int] = {}
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        warm = await client.post("/predict", files={"file": (name, data, "image/png")})  # not counted
        if warm.status_code != 200:
            raise SystemExit(f"warm-up request failed: {warm.status_code} {warm.text[:200]}")

        async def worker() -> None:
            """Take request numbers off the queue until it is empty."""
            nonlocal errors
            while True:
                try:
                    queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                start = time.perf_counter()
                try:
                    response = await client.post("/predict", files={"file": (name, data, "image/png")})
                    key = str(response.status_code)
                    if response.status_code != 200:
                        errors += 1
                except httpx.HTTPError as e:
                    key = type(e).__name__
                    errors += 1
                latencies.append(time.perf_counter() - start)
                statuses[key] = statuses.get(key, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return {"latencies": latencies, "statuses": statuses, "errors": errors, "wall_s": wall}


def check_loopback(url: str) -> str:
    """The URL without a trailing slash, or SystemExit when its host is not a loopback address."""
    from pcnn_fer.deploy.server import is_loopback

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"--url must look like http://127.0.0.1:PORT, got {url!r}")
    if not is_loopback(parts.hostname):
        raise SystemExit(f"refusing to load-test {parts.hostname}: only loopback hosts (127.0.0.1, ::1, localhost)")
    return url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, start (or target) the server, run the load and print the report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="an already running server on a loopback address (default: start one)")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=20)
    p.add_argument("--image", type=Path, default=ROOT / "src" / "pcnn_fer" / "assets" / "astronaut.png")
    p.add_argument("--checkpoint", default="default", help="model of the started server (default: bundled)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="backend of the started server")
    p.add_argument("--workers", type=int, default=2, help="recognizers of the started server")
    p.add_argument("--threads", type=int, default=1, help="classifier CPU threads of the started server")
    p.add_argument("--timeout", type=float, default=120.0, help="per-request timeout (s)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if not 1 <= args.requests <= MAX_REQUESTS:
        raise SystemExit(f"--requests must be between 1 and {MAX_REQUESTS}")
    if not 1 <= args.concurrency <= MAX_CONCURRENCY:
        raise SystemExit(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
    data = args.image.read_bytes()

    model_note = args.checkpoint
    if args.url:
        context = nullcontext(check_loopback(args.url))
    else:
        from pcnn_fer.deploy.server import create_app, serve_in_background
        from pcnn_fer.weights import DEFAULT_MODEL

        checkpoint = args.checkpoint
        if checkpoint == "default" and not DEFAULT_MODEL.exists():
            import torch

            from pcnn_fer import create_model, save_model

            torch.manual_seed(0)
            folder = Path(tempfile.mkdtemp(prefix="pcnn-load-"))
            checkpoint = str(save_model(create_model("compact", num_classes=8), folder / "compact.safetensors"))
            model_note = "random compact PCNN (the bundled model is not built yet; same compute)"
        app = create_app(checkpoint=checkpoint, backend=args.backend, workers=args.workers, threads=args.threads)
        context = serve_in_background(app, host="127.0.0.1", port=0)

    with context as url:
        import httpx

        health = httpx.get(f"{url}/health", timeout=30).json()
        result = asyncio.run(run_load(url, data, args.image.name, args.requests, args.concurrency, args.timeout))
    lat = [t * 1e3 for t in result["latencies"]]
    report = {
        "url": url, "backend": health.get("backend"), "model": model_note if not args.url else "(external server)",
        "workers": health.get("workers"), "requests": args.requests, "concurrency": args.concurrency,
        "image": args.image.name, "p50_ms": percentile(lat, 50), "p90_ms": percentile(lat, 90),
        "p99_ms": percentile(lat, 99), "mean_ms": statistics.fmean(lat) if lat else float("nan"),
        "max_ms": max(lat) if lat else float("nan"), "throughput_rps": args.requests / result["wall_s"],
        "wall_s": result["wall_s"], "errors": result["errors"], "statuses": result["statuses"],
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['requests']} requests, concurrency {report['concurrency']}, {report['backend']} backend, "
              f"{report['workers']} workers, model: {report['model']}")
        print(f"latency ms: p50 {report['p50_ms']:.0f}  p90 {report['p90_ms']:.0f}  p99 {report['p99_ms']:.0f}  "
              f"mean {report['mean_ms']:.0f}  max {report['max_ms']:.0f}")
        print(f"throughput {report['throughput_rps']:.1f} req/s over {report['wall_s']:.1f} s; errors "
              f"{report['errors']}; statuses {report['statuses']}")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
