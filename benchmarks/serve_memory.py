"""Memory of ``pcnn serve`` under concurrent large uploads: resident memory (RSS) of a real ``pcnn serve`` process
before, at its peak during, and after N simultaneous uploads of a flat W×W PNG (small to send, large to decode).

    python benchmarks/serve_memory.py                              # 8 uploads of a flat 7999x7999 PNG (64 MP)
    python benchmarks/serve_memory.py --serve-args "--max-decodes 8"   # what an unbounded server does
    python benchmarks/serve_memory.py --size 4000 --uploads 4 --json
    python benchmarks/serve_memory.py --mode "I;16" --uploads 1      # one 16-bit 7999x7999 PNG (124 KB)

The server runs on a free loopback port with the bundled model (a random tiny PCNN when it is not built); the
memory is read from ``/proc/PID/status`` (``VmRSS`` sampled every 20 ms, ``VmHWM`` for the peak). Linux only.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_UPLOADS = 64
MAX_ROUNDS = 10


#: Flat colours of the PNG modes the benchmark can send.
FLAT_COLOURS = {"RGB": (128, 128, 128), "L": 128, "I;16": 30000, "RGBA": (128, 128, 128, 200)}


def flat_png(size: int, mode: str = "RGB") -> bytes:
    """A flat grey ``size``×``size`` PNG of Pillow ``mode`` (I;16: 16-bit gray): about 2–3 KB per megapixel on the
    wire, 3 bytes per pixel decoded."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (size, size), FLAT_COLOURS[mode]).save(buffer, "PNG")
    return buffer.getvalue()


def proc_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` field in kB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, extra: list[str], timeout: float = 120) -> tuple[subprocess.Popen, str]:
    """``pcnn serve`` on a free loopback port; returns the process and its base URL once /health answers (within
    ``timeout`` seconds)."""
    import httpx

    port = free_port()
    command = ["pcnn", "serve", "--port", str(port), "--checkpoint", checkpoint, "--threads", "1",
               "--log-level", "warning", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"pcnn serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"pcnn serve did not answer within {timeout:g} s")


def measure(url: str, pid: int, data: bytes, uploads: int, warmup: bytes, rounds: int = 1) -> dict:
    """RSS before, peak and after ``rounds`` bursts of ``uploads`` simultaneous uploads of ``data`` (MiB; "after"
    1 s after each burst), the statuses and the time."""
    import httpx

    def post(payload: bytes, name: str) -> int:
        """One upload; its status code."""
        with httpx.Client(base_url=url, timeout=600) as client:
            return client.post("/predict", files={"file": (name, payload, "image/png")}).status_code

    post(warmup, "warmup.png")
    time.sleep(0.5)
    before = proc_kb(pid, "VmRSS")
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        """Record VmRSS every 20 ms until the uploads are answered."""
        while not done.is_set():
            samples.append(proc_kb(pid, "VmRSS"))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    statuses: list[int] = []
    after: list[float] = []
    started = time.perf_counter()
    for _ in range(rounds):
        with ThreadPoolExecutor(uploads) as pool:
            statuses += pool.map(lambda i: post(data, f"big{i}.png"), range(uploads))
        time.sleep(1.0)
        after.append(proc_kb(pid, "VmRSS") / 1024)
    seconds = time.perf_counter() - started - rounds
    done.set()
    sampler.join()
    return {"rss_before_mib": before / 1024, "rss_peak_mib": max(samples + [proc_kb(pid, "VmHWM")]) / 1024,
            "rss_after_mib": after, "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    """Start the server, run the uploads, print the memory report."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=7999, help="width and height of the flat PNG (default 7999: 64 MP)")
    p.add_argument("--mode", default="RGB", choices=sorted(FLAT_COLOURS), help="Pillow mode of the PNG (I;16: 16-bit "
                                                                                  "gray)")
    p.add_argument("--uploads", type=int, default=8, help="simultaneous uploads")
    p.add_argument("--rounds", type=int, default=1, help="bursts of uploads, one after the other")
    p.add_argument("--checkpoint", default="default", help="model of the server (default: bundled)")
    p.add_argument("--serve-args", default="", help="extra pcnn serve options, e.g. \"--max-decodes 2\"")
    p.add_argument("--start-timeout", type=float, default=120, help="seconds the server may take to start")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    if not Path("/proc/self/status").is_file():
        raise SystemExit("this benchmark reads /proc/PID/status (Linux only)")
    if not 1 <= args.uploads <= MAX_UPLOADS:
        raise SystemExit(f"--uploads must be between 1 and {MAX_UPLOADS}")
    if not 1 <= args.rounds <= MAX_ROUNDS:
        raise SystemExit(f"--rounds must be between 1 and {MAX_ROUNDS}")
    checkpoint = args.checkpoint
    from pcnn_fer.weights import ASSETS, DEFAULT_MODEL

    if checkpoint == "default" and not DEFAULT_MODEL.exists():
        import torch

        from pcnn_fer import create_model, save_model

        torch.manual_seed(0)
        folder = Path(tempfile.mkdtemp(prefix="pcnn-mem-"))
        checkpoint = str(save_model(create_model("tiny", num_classes=8), folder / "tiny.safetensors"))
    data = flat_png(args.size, args.mode)
    process, url = start_server(checkpoint, shlex.split(args.serve_args), args.start_timeout)
    try:
        report = measure(url, process.pid, data, args.uploads, (ASSETS / "astronaut.png").read_bytes(), args.rounds)
    finally:
        process.terminate()
        process.wait(30)
    from pcnn_fer.engine.precision import cpu_capabilities, cpu_model

    report.update(size=args.size, mode=args.mode, upload_kb=len(data) / 1024, uploads=args.uploads, rounds=args.rounds,
                  serve_args=args.serve_args, cores=len(os.sched_getaffinity(0)), cpu=cpu_model(),
                  cpu_capabilities=cpu_capabilities())
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{args.rounds} x {args.uploads} x {args.size}x{args.size} flat {args.mode} PNG "
              f"({report['upload_kb']:.0f} KB each), "
              f"serve {args.serve_args or '(defaults)'}, {report['cores']} cores ({report['cpu']}, "
              f"{report['cpu_capabilities']})")
        after = " ".join(f"{a:.0f}" for a in report["rss_after_mib"])
        print(f"RSS MiB: before {report['rss_before_mib']:.0f}  peak {report['rss_peak_mib']:.0f}  after {after}; "
              f"statuses {report['statuses']}; {report['seconds']:.1f} s")
    return 0 if set(report["statuses"]) <= {"200", "413", "503"} else 1


if __name__ == "__main__":
    sys.exit(main())
