"""``stress bench --remote-throughput``: one served reference model feeding simulator workers vs in-process.
Figures are reported in docs/benchmarks.md, never asserted here."""

from conftest import run_cli
from test_cli_errors import assert_user_error


def test_throughput_bench_runs_the_same_episodes_both_ways():
    from stress.bench.remote import throughput

    figures = throughput(episodes=1, workers=1, max_steps=16)
    for side in ("in_process", "served"):
        f = figures[side]
        assert (f["episodes"], f["errors"], f["steps"], f["decisions"]) == (1, 0, 16, 1), f
        assert f["episodes_per_hour"] > 0 and f["startup_s"] > 0
    assert figures["in_process"]["successes"] == figures["served"]["successes"]  # bit-identical episodes


def test_throughput_bench_bad_input_exits_2():
    assert_user_error(run_cli("bench", "--remote-throughput", "--episodes", "0", timeout=120), "--episodes 0", "1 or more")
