"""The server throughput benchmark's figures and limits (no server is started here)."""

from __future__ import annotations

import pytest

from latm.bench.server_throughput import Bench, Result, Server, main, summary


def test_figures_of_a_phase():
    result = Result("hit/llm", latencies=[0.1, 0.2, 0.3, 0.4], errors=["boom"], wall_s=2.0)
    assert result.rate == 2.0  # runs that came back, per second of the phase
    assert result.figure("runs/s") == 2.0
    assert result.figure("p50 ms") == pytest.approx(200.0)
    assert result.figure("p90 ms") == pytest.approx(400.0)
    assert Result("mix").rate == 0.0


def test_the_comparison_prints_medians_side_by_side_with_their_ratio():
    def rounds(*rates: float) -> list[Result]:
        return [Result("hit/llm", latencies=[1.0] * 10, wall_s=10 / r) for r in rates]

    results = {
        "before": {"hit/llm": rounds(10.0, 12.0, 11.0)},
        "after": {"hit/llm": rounds(22.0, 20.0, 30.0)},
    }
    lines = summary(results, ("before", "after"), 3)
    (runs,) = [line for line in lines if "runs/s" in line and line.startswith("hit/llm")]
    assert runs.split()[2:] == ["11.00", "22.00", "2.00x"]
    assert not any(line.startswith("mix") for line in lines)  # a phase not run is not shown


def test_the_mix_makes_a_new_tool_every_nth_run_and_hits_otherwise(tmp_path):
    bench = Bench(runs=8, concurrency=4, make_every=4, timeout_s=10)
    server = Server("this", tmp_path, "http://127.0.0.1:1", None, tmp_path)
    inputs, context = bench.phase_inputs("mix", server)
    makes = [i for i in inputs if "examples" in i]
    assert len(inputs) == 8 and len(makes) == 2
    assert [m["task_type"] for m in makes] == ["word_sorting_1", "word_sorting_2"]
    assert context == {"direct_entry": False}
    again, _ = bench.phase_inputs("mix", server)  # a later round makes tools of its own
    assert [m["task_type"] for m in again if "examples" in m] == [
        "word_sorting_3",
        "word_sorting_4",
    ]
    direct, context = bench.phase_inputs("hit/direct", server)
    assert context == {} and not any("examples" in i for i in direct)


@pytest.mark.parametrize(
    "argv",
    [
        ["--runs", "0"],
        ["--concurrency", "1000"],
        ["--phases", "hit/llm,nope"],
        ["--compare-with", "/nonexistent-checkout"],
    ],
)
def test_out_of_bounds_arguments_are_refused_before_anything_starts(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error" in capsys.readouterr().err
