"""``stress bench --only``: a named benchmark writes bench.json (machine, date, revision, settings, raw repeats,
figures), and ``stress bench --docs`` rewrites exactly the marked tables of the docs from it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from stress.bench.docs import DOCS, RENDERERS, block, markers, regenerate
from stress.bench.named import BENCHMARKS, record

ROOT = Path(__file__).resolve().parents[1]


def test_only_one_benchmark_writes_bench_json_and_the_docs_regenerate_only_its_table(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.run([sys.executable, "-m", "stress.cli", "bench", "--only", "maps", "--map-seeds", "0-2", "--pair-seeds", "0-1", "--widths", "0.3", "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "bench.json").read_text())
    entry = data["benchmarks"]["maps"]
    assert set(data["benchmarks"]) == {"maps"} and entry["machine"]["cpus"] >= 1 and entry["date"].startswith("20")
    assert entry["revision"] and entry["settings"]["map_seeds"] == [0, 1, 2] and "0.3" in entry["figures"]["by_width"]
    assert entry["settings"]["pair_seeds"] == [0, 1] and "0.3" in entry["figures"]["pairs"]["by_width"]
    # a second benchmark joins the file; the first is kept
    record(out, "remote", {**entry, "figures": {"in_process_ms": 0.001, "socket_ms_median": 0.5, "socket_ms_p95": 0.7}})
    assert set(json.loads((out / "bench.json").read_text())["benchmarks"]) == {"maps", "remote"}

    # the docs (a copy): exactly the two blocks of the benchmarks in the file change, every other line stays
    for doc in DOCS:
        (tmp_path / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / doc, tmp_path / doc)
    data = json.loads((out / "bench.json").read_text())
    changed = regenerate(tmp_path, data)
    assert changed == [tmp_path / "docs" / "benchmarks.md"]  # ray.md has only the workers and ray blocks
    before, after = (ROOT / DOCS[0]).read_text(), (tmp_path / DOCS[0]).read_text()
    for name in ("maps", "remote"):
        begin, end = markers(name)
        assert f"{begin}\n{block(name, data['benchmarks'][name])}\n{end}" in after
        inside = lambda text: text[text.index(begin):text.index(end)]
        before = before.replace(inside(before), "")
        after = after.replace(inside(after), "")
    assert before == after
    assert regenerate(tmp_path, data) == []  # already current
    # every benchmark has its table and its block in the docs, so --docs reaches each
    text = "".join((ROOT / doc).read_text() for doc in DOCS)
    assert set(RENDERERS) == set(BENCHMARKS) and all(markers(name)[0] in text for name in BENCHMARKS)


def test_only_bad_name_exits_2():
    proc = subprocess.run([sys.executable, "-m", "stress.cli", "bench", "--only", "render,bogus"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and "--only 'bogus' unknown; valid: render, overhead" in proc.stderr and "Traceback" not in proc.stderr
