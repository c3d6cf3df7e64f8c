"""Chaos: kill -9 tool makers at random moments, with cache hits running alongside.

``python -m latm.bench.chaos [--kills 100]`` starts a scripted OpenAI-compatible
model on loopback (the load benchmark's word-sorting tool) and a SQLite store
with a checkpointer in a temporary directory. Each cycle starts a maker process
for a task type; the process prints when it starts, and is killed with SIGKILL
after a random delay drawn from one uncut make's duration. A killed maker's
thread is resumed by the next maker process (``invoke(None, thread)``, as the
README documents), which may be killed again, until the tool is stored; then the
next task type starts. Meanwhile a hit process keeps answering held-out
questions with the tools already made.

At the end the store is checked: every record readable with its content hash
(nothing quarantined, ``tools doctor`` finds nothing), exactly one version per
made tool (an orphan is a second version or a version record without its
latest record), no lease left, and every answer right. It prints the kills
survived, the orphans found and the time from a killed maker to the next maker
starting, and exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from latm.backends import open_backend
from latm.bench.load import TASK_TYPE, FakeChat, examples
from latm.graph.builder import build_graph
from latm.repository import ToolRepository

N_EXAMPLES = 6


def _env(work: Path, chat: FakeChat) -> dict[str, str]:
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LATM_", "LANGSMITH_"))}
    env.update(
        LATM_STORE_PATH=str(work / "tools.sqlite"),
        LATM_MAKER_BASE_URL=chat.url,
        LATM_MAKER_MODEL="maker",
        LATM_USER_BASE_URL=chat.url,
        LATM_USER_MODEL="user",
        LATM_N_CANDIDATES="1",
        LATM_DIRECT_ENTRY="1",
        LATM_MAX_RETRIES="0",
        LATM_LEASE_WAIT_S="60",
        LATM_EXECUTOR=os.environ.get("LATM_EXECUTOR", "auto"),
        LANGSMITH_TRACING="false",
        NO_PROXY="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    )
    if os.environ.get("LATM_ALLOW_UNSANDBOXED"):
        env["LATM_ALLOW_UNSANDBOXED"] = os.environ["LATM_ALLOW_UNSANDBOXED"]
    return env


# ------------------------------------------------------------------ workers


def _app() -> Any:
    backend = open_backend(store_path=os.environ["LATM_STORE_PATH"])
    return build_graph(store=backend.store, checkpointer=backend.checkpointer())


def maker_worker(task_type: str, thread: str, question: int) -> int:
    """Make (or resume making) the tool of ``task_type`` on ``thread``; print START, DONE."""
    app = _app()
    config: Any = {"configurable": {"thread_id": thread}}
    print("START", time.time(), flush=True)
    ex = examples()
    if app.get_state(config).next:  # a killed maker's run: resume it from its checkpoint
        out = app.invoke(None, config)
        resumed = True
    else:
        inputs = {"task": ex[question]["input"], "examples": ex[:N_EXAMPLES]}
        out = app.invoke({**inputs, "task_type": task_type}, config)
        resumed = False
    result = {
        "answer": out.get("answer"),
        "expected": ex[question]["target"],
        "error": out.get("error"),
        "resumed": resumed,
    }
    print("DONE", json.dumps(result), flush=True)
    return 0


def hit_worker(work: Path) -> int:
    """Answer held-out questions with made tools until ``stop`` appears; write the tally."""
    app = build_graph(store=open_backend(store_path=os.environ["LATM_STORE_PATH"]).store)
    ex = examples()
    rng = random.Random(7)
    tally = {"hits": 0, "right": 0, "wrong": [], "errors": []}
    while not (work / "stop").exists():
        done_file = work / "done.txt"
        made = done_file.read_text().split() if done_file.exists() else []
        if not made:
            time.sleep(0.2)
            continue
        task_type = rng.choice(made)
        question = ex[rng.randrange(N_EXAMPLES, len(ex))]
        time.sleep(0.05)  # concurrent hits, not a busy loop that starves the makers
        out = app.invoke({"task": question["input"], "task_type": task_type})
        tally["hits"] += 1  # type: ignore[operator]
        if out.get("answer") == question["target"]:
            tally["right"] += 1  # type: ignore[operator]
        elif out.get("error"):
            tally["errors"].append(str(out["error"])[:200])  # type: ignore[attr-defined]
        else:
            tally["wrong"].append(task_type)  # type: ignore[attr-defined]
    (work / "hits.json").write_text(json.dumps(tally))
    return 0


# ------------------------------------------------------------------- driver


def _spawn(env: dict[str, str], *argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "latm.bench.chaos", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _started(proc: subprocess.Popen[str]) -> float | None:
    """When the worker said START (its own clock), or ``None`` if it died first."""
    assert proc.stdout is not None
    while True:
        line = proc.stdout.readline()
        if not line:
            return None
        if line.startswith("START"):
            return float(line.split()[1])


def _finished(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("DONE"):
            proc.wait()
            return dict(json.loads(line[5:]))
    proc.wait()
    return None


def check_store(path: Path, made: list[str]) -> dict[str, Any]:
    """Integrity, versions per made tool, orphans and leases of the store at ``path``."""
    store = open_backend(store_path=str(path)).store
    repo = ToolRepository(store)
    problems = repo.check()
    quarantined = repo.quarantined()
    latest = {r.task_type: r.version for r in repo.records()}
    versions: dict[str, list[int]] = {}
    for record in repo.all_versions():
        versions.setdefault(record.task_type, []).append(record.version)
    orphans = sum(max(len(v) - 1, 0) for v in versions.values())
    orphans += sum(1 for t in versions if t not in latest)
    leases = list(store.search(("latm", "default", "leases"), limit=1000))
    return {
        "problems": problems,
        "quarantined": len(quarantined),
        "orphans": orphans,
        "one_version_each": all(versions.get(t) == [1] and latest.get(t) == 1 for t in made),
        "leases": len(leases),
    }


def run(kills: int, seed: int, work: Path) -> int:
    """Run the chaos cycles and print the figures; 0 when every check passed."""
    rng = random.Random(seed)
    ex = examples()
    chat = FakeChat([e["input"] for e in ex[3:N_EXAMPLES]])
    env = _env(work, chat)
    try:
        # one uncut make: how long a make takes (the kill delays are drawn from it)
        proc = _spawn(env, "--worker", "maker", "--task-type", "chaos_warmup", "--thread", "w")
        began = _started(proc)
        result = _finished(proc)
        if began is None or result is None or result["answer"] != result["expected"]:
            print(f"FAIL the uncut make did not work: {result}")
            return 1
        make_s = time.time() - began
        made = ["chaos_warmup"]
        (work / "done.txt").write_text("chaos_warmup\n")
        hitter = _spawn(env, "--worker", "hit", "--work", str(work))
        killed = 0
        task = 0
        resumes = 0
        gaps: list[float] = []
        answers: list[dict[str, Any]] = []
        killed_at: float | None = None
        started = time.monotonic()
        while killed < kills or killed_at is not None:
            task_type = f"chaos_{task}"
            question = N_EXAMPLES + task % (len(ex) - N_EXAMPLES)
            proc = _spawn(
                env,
                "--worker",
                "maker",
                "--task-type",
                task_type,
                "--thread",
                f"thread-{task}",
                "--question",
                str(question),
            )
            began = _started(proc)
            if began is None:
                print(f"FAIL a maker for {task_type} died before it started")
                return 1
            if killed_at is not None:
                gaps.append(began - killed_at)
                resumes += 1
            if killed < kills:
                try:
                    proc.wait(timeout=rng.uniform(0, make_s))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    killed_at = time.time()
                    proc.wait()
                    killed += 1
                    if killed % 10 == 0:
                        print(f"  {killed} kills, {task} tools made", flush=True)
                    continue
            result = _finished(proc)
            if result is None:
                print(f"FAIL the maker for {task_type} ended without an answer")
                return 1
            answers.append(result)
            made.append(task_type)
            with (work / "done.txt").open("a") as handle:
                handle.write(task_type + "\n")
            killed_at = None
            task += 1
        (work / "stop").write_text("")
        hitter.wait(timeout=120)
        hits = json.loads((work / "hits.json").read_text())
        wall = time.monotonic() - started
    finally:
        chat.stop()
    report = check_store(work / "tools.sqlite", made)
    wrong = [a for a in answers if a["answer"] != a["expected"]]
    checks = {
        "every kill survived (each killed run resumed to its tool)": killed == kills,
        "store integrity (no unreadable record, doctor finds nothing)": not report["problems"]
        and report["quarantined"] == 0,
        "exactly one version per made tool": report["one_version_each"],
        "no orphan version": report["orphans"] == 0,
        "no lease left": report["leases"] == 0,
        "every maker's answer right": not wrong,
        "every hit's answer right": hits["right"] == hits["hits"] and hits["hits"] > 0,
    }
    print(f"kills survived      {killed} (of {kills}); resumed runs {resumes}")
    print(f"tools made          {len(made)} (one uncut make: {make_s:.2f} s)")
    print(f"orphans found       {report['orphans']}")
    print(f"leases left         {report['leases']}")
    print(f"hits                {hits['hits']} ({hits['right']} right)")
    if gaps:
        print(
            "killed maker -> next maker starting: "
            f"median {statistics.median(gaps):.2f} s, max {max(gaps):.2f} s"
        )
    print(f"wall                {wall:.0f} s")
    for name, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {name}")
    if hits["wrong"] or hits["errors"]:
        print(f"hit failures: {hits['wrong'][:5]} {hits['errors'][:5]}")
    return 0 if all(checks.values()) else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the options and run the chaos cycles (or one worker)."""
    parser = argparse.ArgumentParser(prog="python -m latm.bench.chaos", description=__doc__)
    parser.add_argument("--kills", type=int, default=100, help="random kill -9s (default 100)")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--worker", choices=["maker", "hit"], help=argparse.SUPPRESS)
    parser.add_argument("--task-type", default=TASK_TYPE, help=argparse.SUPPRESS)
    parser.add_argument("--thread", default="t", help=argparse.SUPPRESS)
    parser.add_argument("--question", type=int, default=N_EXAMPLES, help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "maker":
        return maker_worker(args.task_type, args.thread, args.question)
    if args.worker == "hit":
        return hit_worker(Path(args.work))
    if args.kills < 1:
        parser.error("--kills must be at least 1")
    with tempfile.TemporaryDirectory(prefix="latm-chaos-") as work:
        return run(args.kills, args.seed, Path(work))


if __name__ == "__main__":
    sys.exit(main())
