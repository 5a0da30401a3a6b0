"""Reporters render a scripted event sequence exactly; the live view renders on a terminal."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys

import pytest
from rich.console import Console

from buildtool.build.events import (
    AnyEvent,
    Cached,
    Failed,
    Finished,
    ImageTestsFailed,
    ImageTestsFinished,
    ImageTestsPassed,
    ImageTestsSkipped,
    Merged,
    ReportEvent,
    Retrying,
    Round,
    RunFinished,
    RunStarted,
    Skipped,
    Started,
    Summary,
    UpToDate,
    WatchError,
    Watching,
)
from buildtool.cli.reporter import (
    JsonReporter,
    LiveReporter,
    PlainReporter,
    QuietReporter,
    json_record,
    make_reporter,
    progress_reporter,
    round_line,
)

ARM = "linux/arm64"
TINY = ("//matrix:tiny-en", ARM)
MODEL = ("//model:tiny", ARM)
BASE = ("//base:no_model", ARM)
DIGEST = "sha256:abcd1234567890abcdef"

SUMMARY = Summary(
    succeeded=(BASE,),
    cached=(("//base:cuda", ARM),),
    failed=(MODEL,),
    skipped=(TINY,),
    interrupted=False,
    seconds=12.34,
)

EVENTS: list[AnyEvent] = [
    RunStarted(4, 100.0),
    Started(BASE, 100.0),
    Cached(("//base:cuda", ARM), 100.5, DIGEST),
    Retrying(BASE, 101.0, 2, 1.0, "connection reset by peer"),
    Finished(BASE, 103.2, DIGEST, 3.2),
    Started(MODEL, 103.3),
    Failed(
        MODEL, 104.0, "RUN exited with code 1", "step 4/7\nerror: no space left", "/c/logs/m.log"
    ),
    Skipped(TINY, 104.0, "dependency //model:tiny linux/arm64 failed"),
    RunFinished(SUMMARY, 112.34),
]


def render(reporter: PlainReporter | JsonReporter) -> str:
    for event in EVENTS:
        reporter(event)
    reporter.close()
    return reporter.stream.getvalue()  # type: ignore[attr-defined,no-any-return]


def test_plain_reporter_writes_one_line_per_event_and_a_summary() -> None:
    assert render(PlainReporter(io.StringIO())).splitlines() == [
        "4 platform builds to run",
        "[0/4] started //base:no_model linux/arm64",
        "[1/4] cached //base:cuda linux/arm64 sha256:abcd12345678",
        "[1/4] retrying //base:no_model linux/arm64 in 1.0s (attempt 2): connection reset by peer",
        "[2/4] built //base:no_model linux/arm64 sha256:abcd12345678 (3.2s)",
        "[2/4] started //model:tiny linux/arm64",
        "[3/4] FAILED //model:tiny linux/arm64: RUN exited with code 1",
        "    step 4/7",
        "    error: no space left",
        "    log: /c/logs/m.log",
        "[4/4] skipped //matrix:tiny-en linux/arm64 (dependency //model:tiny linux/arm64 failed)",
        "built 1, cached 1, failed 1, skipped 1 in 12.3s",
    ]


def test_plain_summary_says_when_the_run_was_interrupted() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    summary = Summary((), (), (), (TINY,), interrupted=True, seconds=0.5)
    reporter(RunFinished(summary, 1.0))
    assert stream.getvalue() == "built 0, cached 0, failed 0, skipped 1 in 0.5s (interrupted)\n"


def test_plain_reporter_shows_a_missing_digest_as_a_dash() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    reporter(RunStarted(1, 0.0))
    reporter(Finished(TINY, 1.0, None, 1.0))
    assert stream.getvalue().splitlines()[-1] == "[1/1] built //matrix:tiny-en linux/arm64 - (1.0s)"


def test_json_reporter_writes_one_object_per_line() -> None:
    records = [json.loads(line) for line in render(JsonReporter(io.StringIO())).splitlines()]
    base = {"label": "//base:no_model", "platform": ARM}
    model = {"label": "//model:tiny", "platform": ARM}
    assert records == [
        {"event": "run_started", "total": 4},
        {"event": "started", **base},
        {
            "event": "cached",
            "label": "//base:cuda",
            "platform": ARM,
            "digest": DIGEST,
            "source": "engine",
        },
        {
            "event": "retrying",
            **base,
            "attempt": 2,
            "delay": 1.0,
            "message": "connection reset by peer",
        },
        {"event": "finished", **base, "digest": DIGEST, "seconds": 3.2},
        {"event": "started", **model},
        {
            "event": "failed",
            **model,
            "message": "RUN exited with code 1",
            "log_tail": "step 4/7\nerror: no space left",
            "log_path": "/c/logs/m.log",
        },
        {
            "event": "skipped",
            "label": "//matrix:tiny-en",
            "platform": ARM,
            "reason": "dependency //model:tiny linux/arm64 failed",
        },
        {
            "event": "run_finished",
            "built": 1,
            "cached": 1,
            "failed": 1,
            "skipped": 1,
            "interrupted": False,
            "seconds": 12.34,
        },
    ]


def test_a_hit_of_the_remote_action_cache_says_so_in_every_format() -> None:
    hit = Cached(MODEL, 1.0, DIGEST, "registry")
    plain = PlainReporter(io.StringIO())
    plain(RunStarted(1, 0.0))
    plain(hit)
    assert plain.stream.getvalue().splitlines()[-1] == (  # type: ignore[attr-defined]
        "[1/1] cached //model:tiny linux/arm64 sha256:abcd12345678 from the registry"
    )
    assert json_record(hit) == {
        "event": "cached",
        "label": "//model:tiny",
        "platform": ARM,
        "digest": DIGEST,
        "source": "registry",
    }
    console, out = terminal()
    live = LiveReporter(console)
    live(RunStarted(1, 0.0))
    live(hit)
    live.close()
    assert "cached //model:tiny linux/arm64 from the registry" in out.getvalue()


def test_json_lines_are_stable_text() -> None:
    stream = io.StringIO()
    JsonReporter(stream)(Finished(TINY, 1.0, DIGEST, 2.0))
    assert stream.getvalue() == (
        '{"digest": "sha256:abcd1234567890abcdef", "event": "finished", '
        '"label": "//matrix:tiny-en", "platform": "linux/arm64", "seconds": 2.0}\n'
    )


RUN_EVENTS: list[ReportEvent] = [
    UpToDate(6),
    Merged("//model:tiny", "r/model:tiny", "created", DIGEST, "r/model:tiny: created"),
    ImageTestsPassed(TINY, 2),
    ImageTestsFailed(MODEL, "test 'false' failed with exit code 1", "line 1\nline 2"),
    ImageTestsSkipped(BASE, "engine1 runs linux/amd64"),
    ImageTestsFinished(2, 1),
    Round(("a.md",), (), 0, 0.0123),
    WatchError(("BUILD.images",), "BUILD.images:3: syntax error"),
    Watching(12),
]


def test_plain_reporter_writes_the_events_of_merges_tests_and_watch_rounds() -> None:
    stream = io.StringIO()
    reporter = PlainReporter(stream)
    for event in RUN_EVENTS:
        reporter(event)
    assert stream.getvalue().splitlines() == [
        "nothing to build: 6 platform builds up to date",
        "r/model:tiny: created",
        "ok    //matrix:tiny-en linux/arm64 (2 tests)",
        "FAIL  //model:tiny linux/arm64: test 'false' failed with exit code 1",
        "      line 1",
        "      line 2",
        "skip  //base:no_model linux/arm64: engine1 runs linux/amd64",
        "tested 2 platform builds, 1 failed",
        "a.md: no build affected (0.01s)",
        "BUILD.images:3: syntax error",
        "watching 12 files (Ctrl-C to stop)",
    ]


def test_json_reporter_writes_merges_tests_and_watch_rounds_as_json_lines() -> None:
    stream = io.StringIO()
    reporter = JsonReporter(stream)
    for event in RUN_EVENTS:
        reporter(event)
    tiny = {"label": "//matrix:tiny-en", "platform": ARM}
    assert [json.loads(line) for line in stream.getvalue().splitlines()] == [
        {"event": "up_to_date", "total": 6},
        {
            "event": "merged",
            "label": "//model:tiny",
            "tag": "r/model:tiny",
            "status": "created",
            "digest": DIGEST,
            "detail": "r/model:tiny: created",
        },
        {"event": "tests_passed", **tiny, "tests": 2},
        {
            "event": "tests_failed",
            "label": "//model:tiny",
            "platform": ARM,
            "message": "test 'false' failed with exit code 1",
            "log_tail": "line 1\nline 2",
        },
        {
            "event": "tests_skipped",
            "label": "//base:no_model",
            "platform": ARM,
            "reason": "engine1 runs linux/amd64",
        },
        {"event": "tests_finished", "ran": 2, "failed": 1},
        {"event": "watch_round", "changed": ["a.md"], "rebuilt": [], "failed": 0, "seconds": 0.012},
        {
            "event": "watch_error",
            "changed": ["BUILD.images"],
            "message": "BUILD.images:3: syntax error",
        },
        {"event": "watching", "files": 12},
    ]


def test_a_round_that_built_nothing_says_no_build_affected() -> None:
    assert round_line(Round(("a.md",), (), 0, 0.0123)) == "a.md: no build affected (0.01s)"


def test_a_round_names_changed_paths_rebuilt_labels_and_failures() -> None:
    rebuilt = (("//m:a", "linux/amd64"), ("//m:a", "linux/arm64"), ("//m:b", "linux/amd64"))
    changed = ("a", "b", "c", "d", "e")
    assert round_line(Round(changed, rebuilt, 1, 2.26)) == (
        "a, b, c and 2 more: rebuilt 3 (//m:a, //m:b), 1 failed in 2.3s"
    )
    assert json_record(Round((), rebuilt[:1], 0, 1.0)) == {
        "event": "watch_round",
        "changed": [],
        "rebuilt": [["//m:a", "linux/amd64"]],
        "failed": 0,
        "seconds": 1.0,
    }


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=100, color_system=None), out


def test_live_view_shows_running_builds_with_elapsed_time_and_counts() -> None:
    console, _ = terminal()
    reporter = LiveReporter(console, clock=lambda: 105.0)
    for event in EVENTS[:6]:  # up to //model:tiny started
        reporter(event)
    with console.capture() as capture:
        console.print(reporter.render())
    view = capture.get()
    reporter.close()
    assert "//model:tiny" in view and "1.7s" in view
    assert "//base:no_model" not in view  # finished: no longer in the running table
    assert "2/4 done, 1 running, cached 1, failed 0" in view


def test_live_view_prints_results_above_and_the_summary_at_the_end() -> None:
    console, out = terminal()
    reporter = LiveReporter(console, clock=lambda: 105.0)
    for event in EVENTS:
        reporter(event)
    reporter.close()
    text = out.getvalue()
    assert "built //base:no_model linux/arm64 sha256:abcd12345678 (3.2s)" in text
    assert "FAILED //model:tiny linux/arm64: RUN exited with code 1" in text
    assert "    error: no space left" in text and "    log: /c/logs/m.log" in text
    assert (
        "skipped //matrix:tiny-en linux/arm64 (dependency //model:tiny linux/arm64 failed)" in text
    )
    assert "3/4 done" in text  # the live view was drawn before the last event
    assert text.rstrip().endswith("built 1, cached 1, failed 1, skipped 1 in 12.3s")


def test_live_view_prints_merges_and_test_results_as_plain_text_lines() -> None:
    console, out = terminal()
    reporter = LiveReporter(console)
    reporter(RunStarted(1, 0.0))
    reporter(RunFinished(Summary((TINY,), (), (), (), False, 1.0), 1.0))
    reporter(Merged("//m:a", "r/a:[1]", "created", DIGEST, "r/a:[1]: created"))
    reporter(ImageTestsPassed(TINY, 2))
    reporter.close()
    lines = out.getvalue().rstrip().splitlines()
    assert lines[-2:] == ["r/a:[1]: created", "ok    //matrix:tiny-en linux/arm64 (2 tests)"]


def test_live_view_close_is_safe_before_start_and_twice() -> None:
    console, out = terminal()
    reporter = LiveReporter(console)
    reporter.close()
    assert out.getvalue() == ""  # nothing drawn until the run starts
    reporter(RunStarted(1, 0.0))
    reporter.close()
    reporter.close()
    assert reporter.live is None


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_make_reporter_picks_json_then_live_on_a_terminal_then_plain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("CI", "GITHUB_ACTIONS"):  # in CI, auto means plain even on a terminal
        monkeypatch.delenv(name, raising=False)
    assert isinstance(make_reporter(True, Tty()), JsonReporter)
    assert isinstance(make_reporter(False, Tty()), LiveReporter)
    assert isinstance(make_reporter(False, io.StringIO()), PlainReporter)


def test_importing_the_reporter_does_not_import_rich() -> None:
    code = "import sys, buildtool.cli.reporter; print(sorted(m for m in sys.modules if m.startswith('rich')))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout == "[]\n"


def test_live_view_lists_twenty_running_builds_and_counts_the_rest() -> None:
    console, _ = terminal()
    reporter = LiveReporter(console, clock=lambda: 10.0)
    reporter(RunStarted(25, 0.0))
    for i in range(25):
        reporter(Started((f"//matrix:m{i:02}", ARM), float(i)))
    with console.capture() as capture:
        console.print(reporter.render())
    reporter.close()
    view = capture.get()
    assert "//matrix:m19" in view and "//matrix:m20" not in view
    assert "and 5 more" in view and "0/25 done, 25 running" in view


def test_each_progress_mode_picks_its_reporter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)  # outside CI (ci_log_test.py: inside)
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert isinstance(progress_reporter("rawjson", Tty()), JsonReporter)
    assert isinstance(progress_reporter("quiet", Tty()), QuietReporter)
    assert isinstance(progress_reporter("plain", Tty()), PlainReporter)
    assert isinstance(progress_reporter("tty", io.StringIO()), LiveReporter)
    assert isinstance(progress_reporter("auto", Tty()), LiveReporter)
    assert type(progress_reporter("auto", io.StringIO())) is PlainReporter


def test_quiet_progress_prints_only_failures_and_the_summary() -> None:
    stream = io.StringIO()
    reporter = QuietReporter(stream)
    for event in [*EVENTS, *RUN_EVENTS]:
        reporter(event)
    assert stream.getvalue().splitlines() == [
        "[3/4] FAILED //model:tiny linux/arm64: RUN exited with code 1",
        "    step 4/7",
        "    error: no space left",
        "    log: /c/logs/m.log",
        "built 1, cached 1, failed 1, skipped 1 in 12.3s",
        "FAIL  //model:tiny linux/arm64: test 'false' failed with exit code 1",
        "      line 1",
        "      line 2",
        "BUILD.images:3: syntax error",
    ]


def test_live_view_shows_elapsed_time_and_an_eta_from_recorded_build_times() -> None:
    now = [30.0]
    console, _ = terminal()
    reporter = LiveReporter(console, clock=lambda: now[0])
    a, b, c, d = (("//:a", ARM), ("//:b", ARM), ("//:c", ARM), ("//:d", ARM))
    reporter(RunStarted(4, 0.0, estimates=((a, 60.0), (b, 60.0), (c, 120.0))))
    reporter(Started(a, 0.0))
    # a has 30s left; b and c take 60s and 120s; d was never timed: the mean, 80s.
    assert reporter.eta(now[0]) == 30 + 60 + 120 + 80
    with console.capture() as capture:
        console.print(reporter.render())
    assert "0/4 done, 1 running, cached 0, failed 0  30s elapsed, ETA 4m50s" in capture.get()
    now[0] = 70.0
    reporter(Finished(a, 70.0, DIGEST, 70.0))
    reporter(Started(b, 70.0))
    reporter(Started(d, 70.0))
    # Two run at once: b's 60s and d's 80s, then c's 120s, spread over two.
    assert reporter.eta(now[0]) == (60 + 80 + 120) / 2
    reporter.close()


def test_live_view_has_no_eta_before_any_build_time_is_known() -> None:
    console, _ = terminal()
    reporter = LiveReporter(console, clock=lambda: 5.0)
    reporter(RunStarted(2, 0.0))
    with console.capture() as capture:
        console.print(reporter.render())
    reporter.close()
    assert "5s elapsed" in capture.get() and "ETA" not in capture.get()


def test_no_color_turns_the_live_views_colours_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def styled() -> str:
        out = Tty()
        reporter = progress_reporter("tty", out)
        for event in EVENTS:
            reporter(event)
        reporter.close()
        return "".join(re.findall(r"\x1b\[[0-9;]*m", out.getvalue()))

    assert re.search(r"\[3[0-9]|\[9[0-7]", styled())  # red, green...
    monkeypatch.setenv("NO_COLOR", "1")
    assert not re.search(r"\[3[0-9]|\[9[0-7]", styled())


def test_plain_progress_says_how_long_the_builds_took_last_time() -> None:
    stream = io.StringIO()
    PlainReporter(stream)(RunStarted(3, 0.0, estimates=((TINY, 65.0), (MODEL, 3600.0))))
    assert stream.getvalue() == "3 platform builds to run (last time they took 1h01m)\n"
    assert json_record(RunStarted(3, 0.0, estimates=((TINY, 65.0),))) == {
        "event": "run_started",
        "total": 3,
        "estimated": {"//matrix:tiny-en linux/arm64": 65.0},
    }
