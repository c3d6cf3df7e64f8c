"""Does the local maker write N candidates faster with N server slots? Side by side.

Run ``python -m latm.bench.local_parallel [--candidates 3] [--tokens 256]`` after
``latm local install``. For each slot count (1, then the number of candidates)
it starts the pinned ``llama-server`` with the maker model alone on a free
loopback port, sends the candidates' tool-making requests at once (the maker
prompt of a shipped task, each with its own seed, every reply exactly
``--tokens`` long) and prints the wall time, the aggregate generation rate and
the ratio between the two. ``LATM_LOCAL_PARALLEL`` sets the slot count of
``latm local start``; this tells whether raising it pays on this machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from latm.data import load_task, paper_split
from latm.graph.context import Context
from latm.graph.state import State
from latm.local.paths import LocalPaths
from latm.local.smoke import HOST, default_threads, free_port, server_env
from latm.local.spec import MAKER_MODEL
from latm.nodes.propose import first_prompt
from latm.prompts.maker import MAKER_SYSTEM


def maker_messages(task: str) -> list[dict[str, str]]:
    """The first-round request of ``task``'s candidate 0, as the graph sends it."""
    split = paper_split(load_task(task, rationales=True))
    state = State(examples=split["demos"] + split["validation"])
    (user,) = first_prompt(state, Context(two_step=False), 0)
    return [{"role": "system", "content": MAKER_SYSTEM}, {"role": "user", "content": user}]


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        reply: dict[str, Any] = json.loads(response.read())
        return reply


def _wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("llama-server exited during start-up")
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"llama-server was not healthy after {timeout:.0f} s")


def measure(
    paths: LocalPaths, slots: int, candidates: int, tokens: int, messages: list[dict[str, str]]
) -> tuple[float, int]:
    """Start the maker with ``slots`` slots, send ``candidates`` requests at once.

    Returns:
        Wall seconds for all replies, and the generated tokens in all.
    """
    port = free_port()
    threads = default_threads()
    cmd = [
        str(paths.server_bin),
        "--host",
        HOST,
        "--port",
        str(port),
        "--model",
        str(paths.model_path(MAKER_MODEL)),
        "--ctx-size",
        str(MAKER_MODEL.ctx_size * slots),
        "--parallel",
        str(slots),
        "--threads",
        str(threads),
        "--threads-batch",
        str(threads),
        "--no-webui",
    ]
    with tempfile.TemporaryDirectory() as work:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=work,
            env=server_env(paths),
            start_new_session=True,
        )
        try:
            _wait_healthy(port, proc)
            url = f"http://{HOST}:{port}/v1/chat/completions"

            def one(seed: int) -> int:
                body = {
                    "messages": messages,
                    "max_tokens": tokens,
                    "temperature": 0.8,
                    "seed": seed,
                    "ignore_eos": True,
                    "cache_prompt": False,
                }
                reply = _post(url, body, timeout=1800)
                return int(reply["usage"]["completion_tokens"])

            start = time.perf_counter()
            with ThreadPoolExecutor(candidates) as pool:
                generated = sum(pool.map(one, range(1, candidates + 1)))
            return time.perf_counter() - start, generated
        finally:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main(argv: list[str] | None = None) -> int:
    """Print wall time and generation rate per slot count, and their ratio."""
    parser = argparse.ArgumentParser(prog="python -m latm.bench.local_parallel")
    parser.add_argument("--candidates", type=int, default=3, help="requests sent at once")
    parser.add_argument("--tokens", type=int, default=256, help="tokens generated per reply")
    parser.add_argument("--task", default="word_sorting", help="whose maker prompt to send")
    args = parser.parse_args(argv)
    paths = LocalPaths.from_env()
    if not Path(paths.server_bin).exists() or not paths.model_path(MAKER_MODEL).exists():
        print("the local models are not installed: run `latm local install`", file=sys.stderr)
        return 2
    messages = maker_messages(args.task)
    print(
        f"maker {MAKER_MODEL.name}, {default_threads()} threads, {args.candidates} requests "
        f"at once of {args.task}'s tool-making prompt, {args.tokens} tokens each"
    )
    print(f"{'slots':>5}  {'wall s':>7}  {'tokens':>6}  {'tok/s':>6}")
    rows: dict[int, float] = {}
    for slots in dict.fromkeys((1, args.candidates)):
        wall, generated = measure(paths, slots, args.candidates, args.tokens, messages)
        rows[slots] = wall
        print(f"{slots:>5}  {wall:>7.1f}  {generated:>6}  {generated / wall:>6.1f}")
    if len(rows) == 2:
        print(f"speed-up of {args.candidates} slots over 1: {rows[1] / rows[args.candidates]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
