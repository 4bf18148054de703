"""`stress gallery RUN` on a small real run, checked in a real browser (headless Debian chromium driven by
Playwright): offline, every medium resolves, filters work, cards carry their facts, recorded text cannot
inject markup, regeneration is byte-identical and cached, bad input exits 2."""

import hashlib
import json
import re
import shutil
import subprocess

import duckdb
import pytest

from conftest import run_cli

# recorded text that would run script if it reached the page unescaped: the run's output path holds it
PROBE_DIR = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """4 failing episodes (32 steps cannot finish the task): clean and occlusion:3, direct and best-of-2,
    true outcomes at the first decision; plus a hand-written search finding about one of them."""
    out = tmp_path_factory.mktemp("gallery") / PROBE_DIR
    proc = run_cli("run", "--perturb", "occlusion:3", "--episodes", "1", "--max-steps", "32", "--mode", "both", "--candidates", "2",
                   "--counterfactual-rollouts", "1", "--workers", "1", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (path,) = [p for p in out.iterdir() if p.is_dir()]
    key = duckdb.sql(f"SELECT episode_key FROM read_parquet('{path}/episodes.parquet') WHERE perturbation <> 'clean' AND mode = 'direct'").fetchall()[0][0]
    finding = {"id": "f-0001", "property": 'never_fails <script>alert(3)</script>', "verdict": "violated", "failure": "never_grasped",
               "original": [{"suite": "libero_spatial", "task_id": 0, "init_index": 0, "perturbations": [{"name": "occlusion", "severity": 5, "seed": 3}],
                             "episode_keys": ["0000000000000000"]}],
               "shrunk": [{"suite": "libero_spatial", "task_id": 0, "init_index": 0, "perturbations": [{"name": "occlusion", "severity": 3, "seed": 0}],
                           "episode_keys": [key]}],
               "shrink_path": [{"step": 1, "change": "occlusion severity 5 -> 3", "violated": True, "episode_keys": [key]},
                               {"step": 2, "change": '"><img src=x onerror=alert(4)>', "violated": False, "episode_keys": []}],
               "one_minimal": True, "replay": {"reproduced": 3, "of": 3}, "replay_command": f"stress replay RUN {key}", "unknown_extra": {"x": 1}}
    (path / "findings").mkdir()
    (path / "findings" / "f-0001.json").write_text(json.dumps(finding))
    (path / "findings" / "broken.json").write_text("{not json")  # skipped, not fatal
    return path, proc, key


@pytest.fixture(scope="module")
def gallery(run):
    path, _, _ = run
    proc = run_cli("gallery", str(path), "--workers", "2")
    assert proc.returncode == 0, proc.stderr
    return path / "gallery", proc


@pytest.fixture(scope="module")
def page(gallery):
    """The gallery loaded in headless chromium, with everything it logged and requested."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install -e '.[test]')")
    if not CHROMIUM:
        pytest.skip("chromium not installed (apt-get install chromium; .ci/run does it)")
    folder, _ = gallery
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        tab = browser.new_page(viewport={"width": 1400, "height": 900})
        log = {"console": [], "requests": [], "dialogs": []}
        tab.on("console", lambda m: log["console"].append((m.type, m.text)))
        tab.on("pageerror", lambda e: log["console"].append(("pageerror", str(e))))
        tab.on("request", lambda r: log["requests"].append(r.url))
        tab.on("dialog", lambda d: (log["dialogs"].append(d.message), d.dismiss()))
        tab.goto((folder / "index.html").as_uri())
        tab.wait_for_load_state("load")
        tab.wait_for_function("document.documentElement.classList.contains('js')")
        yield tab, log
        browser.close()


def test_run_ends_with_a_short_headline(run):
    _, proc, _ = run
    tail = proc.stdout.split("results: ", 1)[1].splitlines()[1:]
    assert 3 <= len(tail) <= 15, tail
    text = "\n".join(tail)
    assert "perturbed vs" in text and "worst occlusion:3" in text and "planning vs direct on 2 paired scenarios" in text
    assert "value over-estimation" in text and "copy-frame" in text
    assert "stress show" in text and "stress gallery" in text and "gallery/index.html" in text


def test_page_loads_offline_without_errors(page):
    tab, log = page
    assert [m for m in log["console"] if m[0] in ("error", "pageerror")] == []
    assert log["requests"] and all(url.startswith("file://") for url in log["requests"]), log["requests"]
    hrefs = tab.eval_on_selector_all("[src], [href], [poster]", "els => els.flatMap(e => ['src', 'href', 'poster'].map(a => e.getAttribute(a)).filter(Boolean))")
    assert not [h for h in hrefs if re.match(r"^[a-z]+:", h) or h.startswith("/")], "links must be relative"


def test_every_video_and_image_resolves(page, gallery):
    tab, _ = page
    folder, _ = gallery
    tab.eval_on_selector_all("details", "els => els.forEach(d => d.open = true)")
    images = tab.eval_on_selector_all("img", "els => els.map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
    assert len(images) >= 4 and all(ok for _, ok in images), images
    durations = tab.evaluate("""() => Promise.all([...document.querySelectorAll('video')].map(v => new Promise(done => {
        v.addEventListener('loadedmetadata', () => done([v.getAttribute('src'), v.duration]), {once: true});
        v.addEventListener('error', () => done([v.getAttribute('src'), -1]), {once: true});
        v.preload = 'metadata'; v.load(); })))""")
    assert len(durations) >= 5  # 4 cards (3 with a clean twin beside them) + the finding's shrunk episode
    assert all(d > 1.0 for _, d in durations), durations  # 32 steps: 17 frames (every other step) at 10 fps
    info = json.loads((folder / "eval_info.json").read_text())
    assert info["overall"]["n_episodes"] == 4 and info["overall"]["pc_success"] == 0.0
    assert info["per_task"][0]["task_group"] == "libero_spatial" and info["per_task"][0]["metrics"]["pc_success"] == 0.0
    assert len(info["per_episode"]) == 4 and {"episode_ix", "success", "seed", "video_path"} <= set(info["per_episode"][0])
    videos = sorted(p.relative_to(folder).as_posix() for p in folder.glob("videos/*/*.mp4"))
    assert videos == [f"videos/libero_spatial_0/eval_episode_{n}.mp4" for n in range(4)] == sorted(info["overall"]["video_paths"])
    import imageio_ffmpeg

    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(folder / videos[0])], capture_output=True, text=True).stderr
    assert "h264" in probe and "yuv420p" in probe and "10 fps" in probe and "256x128" in probe  # two 128 px cameras


def test_filters_change_what_is_shown(page):
    tab, _ = page
    count = lambda: tab.eval_on_selector_all("#groups .card", "els => els.filter(e => !e.hidden).length")
    assert count() == 4
    tab.select_option("select[data-filter=family]", "occlusion")
    assert count() == 2 and "2 of 4" in tab.text_content("#shown")
    tab.select_option("select[data-filter=mode]", "planning")
    assert count() == 1
    shown = tab.eval_on_selector_all("#groups .card", "els => els.filter(e => !e.hidden).map(e => [e.dataset.family, e.dataset.mode])")
    assert shown == [["occlusion", "planning"]]
    hidden_groups = tab.eval_on_selector_all("#groups .group", "els => els.filter(g => g.hidden).length")
    assert hidden_groups >= 1  # a mode with no matching card disappears
    tab.select_option("select[data-filter=family]", "")
    tab.select_option("select[data-filter=mode]", "")
    assert count() == 4
    tab.select_option("#sort", "severity")
    first = tab.eval_on_selector_all("#groups .card", "els => els[0].dataset.severity")
    assert first == "0"
    tab.select_option("#sort", "rank")


def test_card_shows_parameters_replay_command_and_predictions(page, run):
    tab, _ = page
    path, _, key = run
    card = tab.locator(f"#card-{key}")
    text = card.inner_text()
    assert "occlusion severity 3" in text and "area_fraction" in text and "realisation check" in text and "changed_fraction" in text
    assert f"stress replay '{path}' {key}" in text  # the path quoted for the shell, shown as text
    assert "clean twin" in text and card.locator("video").count() == 2
    assert card.locator("svg.value circle").count() == 2  # one predicted value per decision
    assert "PSNR" in text and "copy-frame" in text and card.locator("figure.frames img").count() >= 1
    assert card.locator(".timeline .tick").count() >= 2
    planning = tab.locator("#groups .card[data-mode=planning][data-family=occlusion]")
    cells = planning.locator("details.candidates td.chosen")
    assert cells.count() == 2 and "■" in cells.first.inner_text()  # the chosen candidate of each decision
    assert "✓" in planning.inner_text() or "✗" in planning.inner_text()  # true outcomes of the rolled-out decision


def test_recorded_text_cannot_inject_markup(page):
    tab, log = page
    body = tab.inner_text("body")
    assert PROBE_DIR in body  # the output path, shown as text
    assert "never_fails <script>alert(3)</script>" in body and '"><img src=x onerror=alert(4)>' in body  # the finding's text
    assert log["dialogs"] == []
    assert tab.eval_on_selector_all("script", "els => els.map(s => s.getAttribute('src'))") == ["assets/gallery.js"]
    assert tab.eval_on_selector_all("img", "els => els.filter(i => i.getAttribute('src') === 'x').length") == 0


def test_search_finding_gets_a_card(page, run):
    tab, _ = page
    _, _, key = run
    finding = tab.locator("article.finding")
    assert finding.count() == 1  # the broken JSON file is skipped
    text = finding.inner_text()
    assert "reproduced 3 of 3" in text and "occlusion:5" in text and "occlusion:3" in text and "occlusion severity 5 -> 3" in text
    assert finding.locator("video").count() == 1
    assert tab.locator("#findings a[href^='#finding-']").count() == 1
    assert tab.locator(f"#card-{key}").get_attribute("data-property").startswith("never_fails")


def test_screenshot_of_the_overview(page, tmp_path):
    tab, _ = page
    shot = tmp_path / "overview.png"
    tab.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000


def _digests(folder):
    return {p.relative_to(folder).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_regeneration_is_identical_and_renders_nothing_cached(gallery, run):
    folder, first = gallery
    path, _, _ = run
    assert "4 rendered, 0 cached" in first.stdout
    before = _digests(folder)
    again = run_cli("gallery", str(path), "--workers", "2")
    assert again.returncode == 0, again.stderr
    assert "0 rendered, 4 cached" in again.stdout
    assert _digests(folder) == before  # same bytes; not even rewritten


def test_bad_input_exits_2_with_one_line(run, tmp_path):
    path, _, _ = run
    cases = [
        (["gallery", str(tmp_path)], "not a run folder"),
        (["gallery", str(path), "--out", str(path / "manifest.json")], "is a file"),
        (["gallery", str(path), "--out", "/proc/stress-gallery"], "cannot write the gallery"),
        (["gallery", str(path), "--max-cards", "-1"], "--max-cards"),
        (["gallery", str(path), "--workers", "0"], "--workers"),
        (["gallery", str(path), "--videos", "-1"], "--videos -1 invalid; valid: 0 or more, or all"),
        (["gallery", str(path), "--videos", "some"], "--videos some invalid"),
    ]
    for args, needle in cases:
        proc = run_cli(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert needle in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_videos_renders_the_worst_cards_and_reuses_cached_ones(gallery, run, tmp_path):
    """--videos N replays the N worst cards (and their clean twins) only; the others say how to render theirs, and
    eval_info lists them without a video; a build with fewer videos still shows every video an earlier one left."""
    folder, _ = gallery
    path, _, _ = run
    proc = run_cli("gallery", str(path), "--videos", "1", "--out", str(tmp_path / "one"))
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "one" / "index.html").read_text()
    info = json.loads((tmp_path / "one" / "eval_info.json").read_text())
    with_video = [e for e in info["per_episode"] if e["video_path"]]
    rendered = int(re.search(r"videos: (\d+) rendered, 0 cached", proc.stdout).group(1))
    # the worst card (occlusion) and its clean twin, and the finding's shrunk episode unless it is the worst card's
    assert rendered in (2, 3) and len(with_video) == rendered == len(info["overall"]["video_paths"])
    assert len(info["per_episode"]) == 4 and set(re.findall(r'<video [^>]*src="([^"]+)"', html)) == {e["video_path"] for e in with_video}
    assert "no video rendered: this build renders the videos of the 1 worst cards only (--videos 1)" in html
    assert "--videos all --out" in html and "stress replay" in html
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)  # the gallery of all four cards comes along: its videos are the cache
    again = run_cli("gallery", str(copy), "--videos", "0")
    assert again.returncode == 0, again.stderr
    assert "0 rendered, 4 cached" in again.stdout
    assert "no video rendered" not in (copy / "gallery" / "index.html").read_text()


def test_missing_actions_give_a_card_without_video(run, tmp_path):
    path, _, _ = run
    copy = tmp_path / "copy"
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("gallery"))
    shutil.rmtree(copy / "actions")
    proc = run_cli("gallery", str(copy), "--max-cards", "2")
    assert proc.returncode == 0, proc.stderr
    html = (copy / "gallery" / "index.html").read_text()
    assert html.count("the recorded actions of this episode are missing") >= 2
    assert "beyond --max-cards 2" in html and "0 rendered" in proc.stdout


def test_run_without_failures_says_so(tmp_path):
    proc = run_cli("run", "--policy", "expert", "--episodes", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    proc = run_cli("gallery", str(path))
    assert proc.returncode == 0, proc.stderr
    html = (path / "gallery" / "index.html").read_text()
    assert 'id="no-failures"' in html and "No failed episode in this run" in html
    show = run_cli("show", str(path))
    assert "value predictions vs what happened: no data in this run" in show.stdout  # the expert predicts no value


def test_headline_never_exceeds_15_lines():
    """Studies have many settings: the headline keeps to its 15 lines and points to `stress show`."""
    from stress.report.headline import MAX_LINES, headline
    from stress.report.summary import SummaryRow

    summary = [SummaryRow("reference", setting, scene, severity, 4, 0, 2, 0.5, 0.15, 0.85, 0.75 if scene != "clean" else None, 4)
               for setting in ["direct"] + [f"best-of-{n} average" for n in (1, 2, 4, 8, 16)] for scene, severity in (("clean", 0), ("lighting:3", 3))]
    paired = [{"policy": "reference", "setting": r.setting, "perturbation": r.perturbation, "severity": r.severity, "n": 4, "direct": 0.5,
               "planning": 0.5, "planning_only": 1, "direct_only": 1} for r in summary if r.setting != "direct"]
    lines = headline("results/x", summary, {"direct_vs_planning": paired})
    assert len(lines) <= MAX_LINES == 15
    assert "... and 2 more settings: see stress show" in lines and lines[-2].startswith("full tables: stress show")


def test_run_stores_frames_and_failure_onset_that_the_replay_reproduces(run, gallery, page):
    """The runner keeps the agentview frames of each measured decision and the step each failure began;
    the gallery's replay finds the same onset, and the card marks it on the timeline."""
    import numpy as np

    path, _, _ = run
    folder, _ = gallery
    tab, _ = page
    rows = duckdb.sql(f"SELECT episode_key, failure, failure_step, decisions FROM read_parquet('{path}/episodes.parquet')").fetchall()
    for key, failure, onset, decisions in rows:
        with np.load(path / "frames" / f"{key}.npz") as frames:
            assert frames["steps"].tolist() == [0, 16] and decisions == 2
            assert frames["observed"].shape == frames["predicted"].shape == frames["true"].shape == (2, 64, 64, 3)
        assert (onset is not None) == (failure in ("collision", "dropped", "wrong_place")), (failure, onset)
    # whether the reference model's 32 steps reach a failure onset depends on the CPU's float rounding; the expert's
    # pushed episode below always does (test_run_with_gallery_builds_it_for_a_policy_without_predictions)
    replays = {r["episode_key"]: r for r in (json.loads(p.read_text()) for p in folder.glob("videos/*/*.json"))}
    for key, failure, onset, _ in rows:
        assert replays[key]["matches"] and replays[key]["failure_step"] == onset
        marker = tab.locator(f"#card-{key} .timeline .onset")
        assert marker.count() == (1 if onset is not None else 0)


def test_run_with_gallery_builds_it_for_a_policy_without_predictions(tmp_path):
    """`stress run --gallery` (what `make run` does) on the expert: a card without value or frames says why. A push
    mid-chunk leaves the bowl in the wrong place at a step the run stores, the replay finds again and the card's
    timeline marks (the expert's physics reaches it on any CPU)."""
    proc = run_cli("run", "--policy", "expert", "--perturb", "mid_chunk_push:5", "--episodes", "1", "--max-steps", "40", "--no-baseline",
                   "--gallery", "1", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    (path,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert f"open: {(path / 'gallery' / 'index.html').as_uri()}" in proc.stdout and "1 rendered" in proc.stdout
    html = (path / "gallery" / "index.html").read_text()
    assert "No value predictions: this policy predicts none." in html and "the run stored no predicted frames" in html
    assert (path / "gallery" / "videos" / "libero_spatial_0" / "eval_episode_0.mp4").stat().st_size > 1000
    ((failure, onset),) = duckdb.sql(f"SELECT failure, failure_step FROM read_parquet('{path}/episodes.parquet')").fetchall()
    assert failure == "wrong_place" and onset is not None
    (replayed,) = [json.loads(p.read_text()) for p in (path / "gallery").glob("videos/*/*.json")]
    assert replayed["matches"] and replayed["failure_step"] == onset
    assert f'class="onset" style="left: ' in html and f'data-step="{onset}"' in html
