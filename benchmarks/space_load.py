"""The Space under load: many gradio_client users against `trrg space`.

    python benchmarks/space_load.py --burst 50                       # 50 users send one study each at once
    python benchmarks/space_load.py --rate 2 --duration 60           # a steady 2 requests/s for 60 s
    python benchmarks/space_load.py --burst 30 --bad-every 5         # every 5th upload is not an image
    python benchmarks/space_load.py --model DIR --burst 50 --json out.json
    python benchmarks/space_load.py --tiny --burst 50                # a tiny random model from `trrg init`

The server is the app's own `main` (what `trrg space --model DIR --port P` runs; `--app FILE` serves
another version of space/app.py) in a subprocess, with the app's INFO log on (one line per batch, counted
in the summary), so its memory (RSS, from /proc) and CPU time are its own. RSS is read when the server
is ready, after one warm-up request, every 2 s during the run (the peak) and at the end. The model is
--model, else runs/demo/model when it exists (the trained demo model, not committed), else a tiny random
model written by `trrg init` into a temporary folder (it writes up to max_new_tokens tokens, the app's
default, for every study).

Each user is its own gradio_client.Client (its own session). A request's latency runs from submit()
(upload included) to its last message. Outcomes: answered (a report came back), refused (QueueError:
the queue was full), failed (anything else), and, with --bad-every, bad uploads: refused with the
loader's message (expected) or not. The studies rotate over the Space's examples (frontal views, two
with a lateral view).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "space" / "examples"
DEMO_MODEL = ROOT / "runs" / "demo" / "model"
APP = ROOT / "space" / "app.py"
API = "/generate_report"


def studies() -> list[tuple[Path, Path | None]]:
    """(frontal, lateral or None) pairs from the Space's examples."""
    pairs = []
    for frontal in sorted(EXAMPLES.glob("phantom_*_frontal.png")) + sorted(EXAMPLES.glob("nih_*.png")):
        lateral = frontal.with_name(frontal.name.replace("_frontal", "_lateral"))
        pairs.append((frontal, lateral if lateral != frontal and lateral.exists() else None))
    return pairs


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tiny_model(folder: Path) -> Path:
    subprocess.run([sys.executable, "-m", "trrg.cli", "init", "--preset", "tiny", "--out", str(folder)],
                   check=True, stdout=subprocess.DEVNULL)
    return folder


def start_server(model: Path, port: int, log, settings: dict[str, float] | None = None,
                 threads: int | None = None, app_file: Path = APP) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # `trrg space --model DIR --port P` (the app's main), with the app's INFO log (one line per batch) switched on and
    # any --set NAME=VALUE applied first to the app's constants, in whichever of its modules (app.PARTS) holds them.
    code = ("import logging, sys; logging.basicConfig(format='%(asctime)s %(message)s'); "
            "logging.getLogger('trrg.space').setLevel(logging.INFO); "
            "import importlib.util; "
            f"spec = importlib.util.spec_from_file_location('trrg_space_app', {str(app_file)!r}); "
            "app = sys.modules['trrg_space_app'] = importlib.util.module_from_spec(spec); spec.loader.exec_module(app); "
            f"[setattr(part, name, value) for name, value in {dict(settings or {})!r}.items() "
            "for part in (app, *getattr(app, 'PARTS', ())) if hasattr(part, name)]; "
            "sys.exit(app.main(sys.argv[1:]))")
    command = ["--model", str(model), "--port", str(port)] + ([] if threads is None else ["--threads", str(threads)])
    server = subprocess.Popen([sys.executable, "-c", code, *command],
                              stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}; see {log.name}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/gradio_api/info", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"the server did not answer within 180 s; see {log.name}")


def new_client(url: str):
    """A user: a browser waits for an upload to go through, so the client's 5 s HTTP timeout is raised
    to 120 s (the server's own limits decide who is refused)."""
    from gradio_client import Client

    return Client(url, verbose=False, download_files=False, httpx_kwargs={"timeout": 120})


def one_request(client, frontal: Path, lateral: Path | None, bad: bool, tokens: int | None) -> dict:
    """Submit one study and wait for its end: {"outcome", "latency", "report" | "error"}."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    try:
        from gradio_client.utils import QueueError
    except ImportError:  # pragma: no cover - older clients
        QueueError = type("QueueError", (Exception,), {})  # noqa: N806
    args = [handle_file(str(frontal)), None if lateral is None else handle_file(str(lateral)), 1]
    start = time.perf_counter()
    try:
        job = client.submit(*args, tokens, api_name=API)
        result = job.result(timeout=600)
        outcome = "answered" if isinstance(result[0], str) and result[0] else "failed"
        return {"outcome": "bad upload not refused" if bad else outcome, "latency": time.perf_counter() - start,
                "report": result[0]}
    except QueueError as error:
        return {"outcome": "refused", "latency": time.perf_counter() - start, "error": str(error)}
    except AppError as error:
        expected = bad and "not an image" in str(error)
        return {"outcome": "bad upload refused" if expected else "failed", "latency": time.perf_counter() - start,
                "error": str(error)}
    except Exception as error:  # noqa: BLE001 - counted and shown
        if "Queue is full" in str(error):
            return {"outcome": "refused", "latency": time.perf_counter() - start, "error": str(error)}
        return {"outcome": "failed", "latency": time.perf_counter() - start, "error": f"{type(error).__name__}: {error}"}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]  # nearest rank


class Sampler(threading.Thread):
    """Reads the server's RSS every `every` seconds while the load runs."""

    def __init__(self, pid: int, every: float = 2.0):
        super().__init__(daemon=True)
        self.pid, self.every, self.samples, self.stop = pid, every, [], threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.stop.is_set():
            self.samples.append((round(time.monotonic() - start, 1), round(rss_mb(self.pid), 1)))
            self.stop.wait(self.every)


def run_burst(url: str, users: int, bad_every: int, tokens: int | None) -> list[dict]:
    """`users` clients (connected first), each sending one study at the same moment."""
    pairs = studies()
    clients = [new_client(url) for _ in range(users)]
    barrier, results = threading.Barrier(users), [None] * users

    def user(index: int) -> None:
        frontal, lateral = pairs[index % len(pairs)]
        bad = bool(bad_every) and index % bad_every == bad_every - 1
        barrier.wait()
        results[index] = one_request(clients[index], BAD_UPLOAD if bad else frontal, lateral, bad, tokens)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_steady(url: str, rate: float, duration: float, pool: int, bad_every: int, tokens: int | None) -> list[dict]:
    """Open loop: a new request every 1/rate s for `duration` s, whatever the answers (clients from a pool)."""
    pairs = studies()
    clients = [new_client(url) for _ in range(pool)]
    results, threads = [], []
    lock = threading.Lock()

    def user(index: int) -> None:
        frontal, lateral = pairs[index % len(pairs)]
        bad = bool(bad_every) and index % bad_every == bad_every - 1
        result = one_request(clients[index % pool], BAD_UPLOAD if bad else frontal, lateral, bad, tokens)
        with lock:
            results.append(result)

    start = time.monotonic()
    for index in range(round(rate * duration)):
        time.sleep(max(0.0, start + index / rate - time.monotonic()))
        threads.append(threading.Thread(target=user, args=(index,)))
        threads[-1].start()
    for thread in threads:
        thread.join()
    return results


def summary(results: list[dict]) -> dict:
    counts: dict[str, int] = {}
    for result in results:
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    served = [r["latency"] for r in results if r["outcome"] == "answered"]
    return {
        "requests": len(results),
        "answered": counts.get("answered", 0),
        "refused": counts.get("refused", 0),
        "failed": counts.get("failed", 0) + counts.get("bad upload not refused", 0),
        "bad_uploads_refused": counts.get("bad upload refused", 0),
        "p50_s": round(percentile(served, 50), 2),
        "p95_s": round(percentile(served, 95), 2),
        "max_s": round(max(served), 2) if served else float("nan"),
        "errors": sorted({r["error"][:160] for r in results if r["outcome"] == "failed" and "error" in r}),
    }


BAD_UPLOAD = Path(tempfile.gettempdir()) / "space_load_notes.png"  # a text file named .png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="stage-2 model folder (default: runs/demo/model, else a tiny one)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model (`trrg init`) even if runs/demo/model exists")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--burst", type=int, help="N users sending one study each at the same moment")
    mode.add_argument("--rate", type=float, help="requests per second, open loop, for --duration s")
    parser.add_argument("--repeat", type=int, default=1, help="bursts one after the other (new users each time)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of --rate load (default 60)")
    parser.add_argument("--clients", type=int, default=16, help="client pool of --rate (default 16)")
    parser.add_argument("--bad-every", type=int, default=0, help="every k-th upload is not an image (0: none)")
    parser.add_argument("--tokens", type=int, help="max_new_tokens per request (default: the app's default)")
    parser.add_argument("--json", type=Path, help="write the summary here too")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override an app constant for this run (MAX_BATCH_SIZE, QUEUE_SIZE, CONCURRENCY_LIMIT, ...)")
    parser.add_argument("--app", type=Path, default=APP, help="the app file to serve (default space/app.py; its sibling modules "
                        "are imported from its folder. To compare an older version: `git show REV:space/app.py` for one "
                        "up to the split into modules, else `git archive REV space | tar -x -C DIR` and DIR/space/app.py)")
    parser.add_argument("--threads", type=int, help="the server's torch threads (default: the app's)")
    parser.add_argument("--verbose", action="store_true", help="print the server's batch lines and the latencies")
    args = parser.parse_args(argv)
    if args.burst is None and args.rate is None:
        args.burst = 50
    BAD_UPLOAD.write_text("this is a text file, not an image")

    with tempfile.TemporaryDirectory(prefix="space_load_") as scratch:
        if args.model is not None:
            model = args.model.resolve()
        elif (DEMO_MODEL / "config.json").is_file() and not args.tiny:
            model = DEMO_MODEL
        else:
            model = tiny_model(Path(scratch) / "tiny")
        tokens = args.tokens
        if tokens is None:  # the app's default: the model's generation_config.max_new_tokens, within the slider
            config = json.loads((model / "generation_config.json").read_text()) if (model / "generation_config.json").is_file() else {}
            tokens = min(max(int(config.get("max_new_tokens") or 96), 16), 256)
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        log = open(Path(scratch) / "server.log", "w+")  # noqa: SIM115 - closed below
        settings = {name: json.loads(value) for name, value in (item.split("=", 1) for item in args.set)}
        server = start_server(model, port, log, settings, args.threads, args.app.resolve())
        try:
            rss_ready = rss_mb(server.pid)
            pairs = studies()
            warm = one_request(new_client(url), *pairs[0], False, tokens)
            if warm["outcome"] != "answered":
                raise SystemExit(f"the warm-up request failed: {warm}")
            rss_warm = rss_mb(server.pid)
            sampler = Sampler(server.pid)
            sampler.start()
            started, cpu_start = time.perf_counter(), cpu_s(server.pid)
            rss_after = []
            if args.burst is not None:
                scenario = f"burst of {args.burst} users at once" + (f", {args.repeat} times" if args.repeat > 1 else "")
                results = []
                for _ in range(args.repeat):
                    results += run_burst(url, args.burst, args.bad_every, tokens)
                    rss_after.append(round(rss_mb(server.pid), 1))
            else:
                scenario = f"{args.rate:g} requests/s for {args.duration:g} s ({args.clients} clients)"
                results = run_steady(url, args.rate, args.duration, args.clients, args.bad_every, tokens)
            wall, server_cpu = time.perf_counter() - started, cpu_s(server.pid) - cpu_start
            time.sleep(2.0)  # let the server settle before the last memory reading
            sampler.stop.set()
            sampler.join()
            rss_end = rss_mb(server.pid)
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
            log.seek(0)
            server_log = log.read()
            log.close()

    batches = [int(m) for m in re.findall(r"batch of (\d+) ", server_log)]
    result = {
        "scenario": scenario, "model": str(model), "max_new_tokens": tokens, "settings": settings,
        "threads": args.threads, "app": str(args.app), "wall_s": round(wall, 1),
        "server_cpu_s": round(server_cpu, 1),
        **summary(results),
        "rss_mb": {"ready": round(rss_ready, 1), "after_warmup": round(rss_warm, 1),
                   "peak": max(rss for _, rss in sampler.samples), "end": round(rss_end, 1),
                   **({"after_each_burst": rss_after} if len(rss_after) > 1 else {})},
        "batches": {"count": max(0, len(batches) - 1), "sizes": dict(sorted(Counter(batches[1:]).items()))},  # less warm-up
        "rss_samples": sampler.samples,
        "load_average_at_end": os.getloadavg(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "rss_samples"}, indent=1))
    print(f"| {scenario} | {result['answered']} | {result['refused']} | {result['failed']} | "
          f"{result['p50_s']} | {result['p95_s']} | {result['max_s']} | "
          f"{result['rss_mb']['after_warmup']} -> {result['rss_mb']['end']} (peak {result['rss_mb']['peak']}) |")
    if args.verbose:
        print("\n".join(line for line in server_log.splitlines() if "batch of" in line))
        print("latencies (s):", sorted(round(r["latency"], 2) for r in results))
    if result["failed"] and "Traceback" in server_log:
        print("server log (tail):\n" + server_log[-3000:], file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0 if result["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
