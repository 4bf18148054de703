"""``stress bench --remote-throughput``: one served policy feeding simulator workers, per wire, vs in-process.
Figures are reported in docs/benchmarks.md, never asserted here."""

from conftest import run_cli
from test_cli_errors import assert_user_error


def test_throughput_bench_runs_the_same_episodes_both_ways():
    from stress.bench.remote import throughput

    figures = throughput(episodes=1, workers=1, max_steps=16)
    for side in ("in_process", "served"):
        f = figures[side]
        assert (f["suite"], f["episodes"], f["errors"], f["steps"], f["decisions"]) == ("libero_spatial", 1, 0, 16, 1), f
        assert f["episodes_per_hour"] > 0 and f["startup_s"] > 0
    assert figures["in_process"]["successes"] == figures["served"]["successes"]  # bit-identical episodes
    # openpi's wire executes 5 of each 16-action chunk (openpi's LIBERO client); deploy.py's stand-in 16 of its 50 here
    assert (figures["openpi"]["suite"], figures["openpi"]["errors"], figures["openpi"]["steps"], figures["openpi"]["decisions"]) == ("libero_spatial", 0, 16, 4)
    assert (figures["cosmos_deploy"]["suite"], figures["cosmos_deploy"]["errors"], figures["cosmos_deploy"]["steps"], figures["cosmos_deploy"]["decisions"]) == ("aloha", 0, 16, 1)


def test_throughput_bench_bad_input_exits_2():
    assert_user_error(run_cli("bench", "--remote-throughput", "--episodes", "0", timeout=120), "--episodes 0", "1 or more")
