"""Load test of LATM on the LangGraph server: concurrent makers, then many cache hits.

``python -m latm.bench.load`` starts, all on 127.0.0.1:

1. a tiny OpenAI-compatible chat server with scripted replies (the maker writes a
   word-sorting tool with a ``solve(request)`` entry; the user model writes a call
   of it), counting the calls it gets;
2. ``langgraph dev`` serving LATM's graph (its own in-memory store and checkpointer).

Then, with ``langgraph_sdk`` (``runs.wait``), it sends ``--makers`` concurrent
requests for the same new task (exactly one may reach the maker), ``--requests``
hit-path requests with ``--concurrency`` in flight (answered by the tool's direct
entry, no model call), and ``--llm`` hits through the user model. It prints
throughput, p50/p90/p99 latency and errors per phase, checks that every request
got the right answer, that the maker was called once and that the server's store
holds one tool version, and exits 1 if a check fails. Bounded in count and time;
it stops everything it started.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from latm.data import __file__ as _data_init
from latm.local.smoke import free_port

ROOT = Path(__file__).resolve().parents[2]
TASK_TYPE = "word_sorting"
N_EXAMPLES = 12

TOOL = '''\
import re


def sort_words(words: list[str]) -> str:
    """Sort words alphabetically and join them with single spaces."""
    return " ".join(sorted(words))


def solve(request: str) -> str:
    """Answer a word-sorting question given as text."""
    match = re.search(r"List:(.*)$", request, re.S)
    if not match:
        raise ValueError("not a word-sorting question")
    return sort_words(match.group(1).split())
'''


def examples() -> list[dict[str, str]]:
    """The shipped BIG-Bench Hard word-sorting examples."""
    path = Path(_data_init).parent / "bbh" / f"{TASK_TYPE}.json"
    return list(json.loads(path.read_text())["examples"])


def words_of(question: str) -> list[str]:
    """The word list of a word-sorting question."""
    return question.rsplit("List:", 1)[1].split("\n", 1)[0].split()


class _Server(ThreadingHTTPServer):
    """A threading HTTP server whose listen queue holds a burst of concurrent requests.

    The standard library's queue holds 5: a server whose runs call the model at
    once (async nodes) would see refused connections, which no real model server gives.
    """

    request_queue_size = 1024
    daemon_threads = True


class FakeChat:
    """An OpenAI-compatible ``/v1/chat/completions`` with scripted replies, on loopback."""

    def __init__(self, validation: list[str], latency_s: float = 0.0) -> None:
        """Script the maker's tool for these validation questions.

        Args:
            validation: The validation questions the maker's reply calls the tool on.
            latency_s: How long each reply takes (a thread per request: replies overlap).
        """
        self.latency_s = max(0.0, latency_s)
        calls = "\n".join(f"    sort_words({words_of(q)!r})," for q in validation)
        self.maker_reply = f"```python\n{TOOL}\nCALLS = [\n{calls}\n]\n```"
        self.calls: dict[str, int] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                text = fake.reply(body)
                if fake.latency_s:
                    time.sleep(fake.latency_s)
                payload = json.dumps(
                    {
                        "id": "fake",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": body.get("model", "fake"),
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {
                            "prompt_tokens": 100,
                            "completion_tokens": 20,
                            "total_tokens": 120,
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reply(self, body: dict[str, Any]) -> str:
        """The maker's tool, or the user model's call for the last question it sees."""
        model = str(body.get("model"))
        with self.lock:
            self.calls[model] = self.calls.get(model, 0) + 1
        if model == "maker":
            return self.maker_reply
        last = str(body["messages"][-1]["content"])
        return f"```python\nsort_words({words_of(last)!r})\n```"

    def stop(self) -> None:
        """Stop serving."""
        self.server.shutdown()


def start_server(
    work: Path, chat: FakeChat, jobs: int, root: Path = ROOT
) -> tuple[subprocess.Popen[bytes], str]:
    """``langgraph dev`` on a free loopback port with LATM's graph; waits until it answers.

    Args:
        work: A scratch directory (the server's config, log and state go there).
        chat: The scripted model server.
        jobs: Runs the server executes at once (``--n-jobs-per-worker``).
        root: The checkout whose LATM the server runs (this one by default).
    """
    config = {
        "dependencies": [str(root)],
        "graphs": {"latm": str(root / "latm" / "graph" / "builder.py") + ":graph"},
    }
    (work / "langgraph.json").write_text(json.dumps(config))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATM_", "LANGSMITH_"))}
    env.update(
        LATM_MAKER_BASE_URL=chat.url,
        LATM_MAKER_MODEL="maker",
        LATM_USER_BASE_URL=chat.url,
        LATM_USER_MODEL="user",
        LATM_N_CANDIDATES="1",
        LATM_DIRECT_ENTRY="1",
        LATM_MAX_RETRIES="0",
        LATM_LEASE_WAIT_S="120",
        LATM_EXECUTOR=os.environ.get("LATM_EXECUTOR", "auto"),
        LANGGRAPH_CLI_NO_ANALYTICS="1",
        LANGGRAPH_NO_VERSION_CHECK="true",
        LANGSMITH_TRACING="false",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    )
    for name in ("LATM_ALLOW_UNSANDBOXED",):
        if os.environ.get(name):
            env[name] = os.environ[name]
    langgraph = Path(sys.executable).with_name("langgraph")
    argv = [
        str(langgraph) if langgraph.exists() else shutil.which("langgraph") or "langgraph",
        "dev",
        "--no-browser",
        "--no-reload",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n-jobs-per-worker",
        str(jobs),
        "--config",
        str(work / "langgraph.json"),
    ]
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        argv, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"langgraph dev exited:\n{(work / 'server.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url + "/ok", timeout=2) as answer:
                if answer.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.25)
    stop_server(proc)
    raise RuntimeError("langgraph dev did not start within 120 s")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server's process group."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def percentile_ms(latencies: list[float], p: float) -> float:
    """The ``p``-th percentile of ``latencies`` (seconds) in ms, nearest rank; NaN if empty."""
    ordered = sorted(latencies)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


@dataclass
class Phase:
    """The outcome of one phase of requests."""

    name: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, p: float) -> float:
        """The ``p``-th latency percentile in ms (nearest rank)."""
        return percentile_ms(self.latencies, p)

    def row(self) -> str:
        """One line of the report."""
        n = len(self.latencies)
        rate = n / self.wall_s if self.wall_s else 0.0
        return (
            f"{self.name:<12}{n:>6}{self.concurrency:>6}{self.wall_s:>9.2f}{rate:>9.1f}"
            f"{self.percentile(50):>9.0f}{self.percentile(90):>9.0f}{self.percentile(99):>9.0f}"
            f"{len(self.errors):>7}"
        )


async def run_phase(
    url: str, name: str, inputs: list[dict[str, Any]], concurrency: int, context: dict[str, Any]
) -> Phase:
    """Send every input with ``runs.wait`` (``concurrency`` in flight); time each."""
    from langgraph_sdk import get_client

    client = get_client(url=url, timeout=300)
    phase = Phase(name, concurrency)
    gate = asyncio.Semaphore(concurrency)

    async def one(payload: dict[str, Any]) -> None:
        async with gate:
            started = time.perf_counter()
            try:
                out: Any = await client.runs.wait(
                    None, "latm", input=payload, context=context, raise_error=False
                )
            except Exception as exc:
                out = {"error": f"{type(exc).__name__}: {exc}"}
            phase.latencies.append(time.perf_counter() - started)
            out = out if isinstance(out, dict) else {"error": f"unexpected output {out!r}"}
            phase.outputs.append({**out, "expected": payload.get("expected")})
            if out.get("error"):
                phase.errors.append(str(out["error"]))

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in inputs))
    phase.wall_s = time.perf_counter() - started
    for p in inputs:
        p.pop("expected", None)
    return phase


async def tools_on_server(url: str) -> tuple[int, int]:
    """How many tools and tool versions the server's store holds."""
    from langgraph_sdk import get_client

    client = get_client(url=url)
    tools = await client.store.search_items(("latm", "default", "tools"), limit=100)
    versions = await client.store.search_items(("latm", "default", "tool_versions"), limit=100)
    return len(tools["items"]), len(versions["items"])


def main(argv: list[str] | None = None) -> int:
    """Run the load test; print the report; exit 1 if a check failed."""
    parser = argparse.ArgumentParser(prog="python -m latm.bench.load", description=__doc__)
    parser.add_argument("--requests", type=int, default=200, help="hit-path requests (direct)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument(
        "--makers", type=int, default=8, help="concurrent requests for the new tool"
    )
    parser.add_argument("--llm", type=int, default=40, help="hits through the user model")
    parser.add_argument("--jobs", type=int, default=32, help="langgraph dev --n-jobs-per-worker")
    args = parser.parse_args(argv)
    if not (0 < args.requests <= 5000 and 0 < args.concurrency <= 256 and 0 < args.makers <= 64):
        parser.error("keep --requests ≤ 5000, --concurrency ≤ 256 and --makers ≤ 64")

    data = examples()
    train, pool = data[:N_EXAMPLES], data[N_EXAMPLES:]
    chat = FakeChat([e["input"] for e in train[3:6]])
    work = Path(tempfile.mkdtemp(prefix="latm-load-"))
    proc, url = start_server(work, chat, args.jobs)

    def request(i: int, **extra: Any) -> dict[str, Any]:
        ex = pool[i % len(pool)]
        return {"task": ex["input"], "task_type": TASK_TYPE, "expected": ex["target"], **extra}

    try:
        phases = [
            asyncio.run(
                run_phase(
                    url,
                    "make",
                    [request(i, examples=train) for i in range(args.makers)],
                    args.makers,
                    {},
                )
            ),
            asyncio.run(
                run_phase(
                    url,
                    "hit/direct",
                    [request(i) for i in range(args.requests)],
                    args.concurrency,
                    {},
                )
            ),
            asyncio.run(
                run_phase(
                    url,
                    "hit/llm",
                    [request(i) for i in range(args.llm)],
                    args.concurrency,
                    {"direct_entry": False},
                )
            ),
        ]
        n_tools, n_versions = asyncio.run(tools_on_server(url))
    finally:
        stop_server(proc)
        chat.stop()

    print(
        f"{'phase':<12}{'reqs':>6}{'conc':>6}{'wall s':>9}{'req/s':>9}{'p50 ms':>9}"
        f"{'p90 ms':>9}{'p99 ms':>9}{'errors':>7}"
    )
    for phase in phases:
        print(phase.row())
    wrong = sum(o.get("answer") != o["expected"] for p in phases for o in p.outputs)
    sent = args.makers + args.requests + args.llm
    answered = sum(len(p.outputs) for p in phases)
    checks = {
        f"every request answered ({answered}/{sent})": answered == sent,
        f"every answer right ({wrong} wrong)": wrong == 0,
        f"maker called once ({chat.calls.get('maker', 0)})": chat.calls.get("maker", 0) == 1,
        f"one tool, one version in the store ({n_tools}, {n_versions})": (n_tools, n_versions)
        == (1, 1),
        f"direct hits used no model ({chat.calls.get('user', 0)} user calls for "
        f"{args.llm} llm hits)": chat.calls.get("user", 0) == args.llm,
        "no errors": not any(p.errors for p in phases),
    }
    for what, ok in checks.items():
        print(f"{'ok ' if ok else 'FAIL'} {what}")
    for phase in phases:
        for error in phase.errors[:3]:
            print(f"  {phase.name} error: {error[:300]}")
    if all(checks.values()):
        shutil.rmtree(work, ignore_errors=True)
        return 0
    print(f"server log: {work / 'server.log'}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
