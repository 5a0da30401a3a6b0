"""What a run tells besides its progress: the GitHub step summary and the trace, of one real
`bt build` where one build is rebuilt after an edit, one fails, one is skipped after it and two
are up to date."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import pytest
from btrun import bt, write_tree

pytestmark = pytest.mark.engine
AMD = "linux/amd64"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, engine: str) -> dict[str, Any]:
    """The workspace after `bt build //:app //:other`, an edit of app's b.txt, then
    `bt build //...` with GITHUB_STEP_SUMMARY and --trace: the plan it ran, its outputs."""
    tmp = tmp_path_factory.mktemp("story")
    nonce = uuid.uuid4().hex
    root = write_tree(
        tmp / "ws",
        {
            ".cache-spec": (
                f'platforms = ["{AMD}"]\n[builders."*"]\nhost = "{engine}"\nnetwork = "none"\n'
            ),
            "BUILD.images": (
                'image(name = "base", dockerfile = "base.Dockerfile")\n'
                'image(name = "app", dockerfile = "app.Dockerfile", parents = {"BASE": ":base"})\n'
                'image(name = "other", dockerfile = "other.Dockerfile")\n'
                'image(name = "bad", dockerfile = "bad.Dockerfile")\n'
                'image(name = "after", dockerfile = "app.Dockerfile", parents = {"BASE": ":bad"})\n'
            ),
            "base.Dockerfile": "FROM scratch\nCOPY a.txt /\n",
            "app.Dockerfile": "ARG BASE\nFROM ${BASE}\nCOPY b.txt /\n",
            "other.Dockerfile": "FROM scratch\nCOPY c.txt /\n",
            "bad.Dockerfile": "FROM scratch\nCOPY a.txt /\nCOPY --from=nonexistent-image:none /x /\n",
            "a.txt": nonce,
            "b.txt": "b 1\n",
            "c.txt": nonce + "c",
        },
    )
    first = bt("build", "//:app", "//:other", cwd=root)
    assert first.returncode == 0, first.stderr
    (root / "b.txt").write_text("b 2\n")
    planned = bt("plan", "//...", "--all", "--format", "json", cwd=root)
    assert planned.returncode == 0, planned.stderr
    summary = tmp / "summary.md"
    summary.write_text("# earlier step\n")  # GitHub's file holds what earlier steps wrote
    trace = tmp / "trace.json"
    result = bt(
        "build", "//...", "--trace", str(trace), "--json", cwd=root,
        env={"GITHUB_STEP_SUMMARY": str(summary)},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    return {
        "root": root,
        "plan": {(p["label"], p["platform"]): p for p in json.loads(planned.stdout)},
        "events": [json.loads(line) for line in result.stdout.splitlines()],
        "summary": summary.read_text(),
        "trace": json.loads(trace.read_text()),
    }


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the tables under ``heading`` (up to the next heading)."""
    section = markdown.split(heading, 1)[1].split("\n#### ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in row.strip("|").split(" | ")] for row in rows if row[2:7] != "build"]


def test_the_step_summary_lists_exactly_the_builds_that_ran_with_their_plan_reasons(
    run: dict[str, Any],
) -> None:
    plan, markdown = run["plan"], run["summary"]
    digest = json.loads((run["root"] / "images.lock").read_text())["builds"]["//:app"][AMD]
    assert markdown.startswith("# earlier step\n### bt build //...\n")
    assert table_rows(markdown, "#### Builds that ran") == [
        ["//:app", AMD, plan[("//:app", AMD)]["reason"], "built", row_time(markdown, "//:app"),
         f"`{digest['digest'][:19]}`"],
        ["//:bad", AMD, plan[("//:bad", AMD)]["reason"], "**failed**",
         row_time(markdown, "//:bad"), "-"],
    ]  # fmt: skip
    assert plan[("//:app", AMD)]["reason"] == "inputs changed: b.txt"
    counts = markdown.split("| built | cached locally |", 1)[1].splitlines()[2]
    assert counts == "| 1 | 0 | 0 | 1 | 1 | 2 |"  # built, cached x2, failed, skipped, fresh
    assert "<details><summary>//:bad linux/amd64: cannot pin nonexistent-image:none" in markdown
    assert re.search(
        r"^Critical path \([\d.]+s\): `//:\w+` linux/amd64 \([\d.]+s\)$", markdown, re.M
    )


def row_time(markdown: str, label: str) -> str:
    found = re.search(rf"^\| {re.escape(label)} \|.*\| ([\d.]+s) \| [^|]+ \|$", markdown, re.M)
    assert found, markdown
    return found.group(1)


def test_the_trace_is_trace_json_with_one_span_per_build_that_ran(run: dict[str, Any]) -> None:
    trace, plan = run["trace"], run["plan"]
    assert set(trace) == {"traceEvents", "displayTimeUnit"}
    events = trace["traceEvents"]
    assert all({"name", "ph", "pid", "tid"} <= set(e) for e in events)
    spans = [e for e in events if e.get("cat") == "build"]
    ran = {
        (e["label"], e["platform"]) for e in run["events"] if e["event"] in ("finished", "failed")
    }
    assert ran == {("//:app", AMD), ("//:bad", AMD)}
    assert sorted((s["args"]["label"], s["args"]["platform"]) for s in spans) == sorted(ran)
    for span in spans:
        build = (span["args"]["label"], span["args"]["platform"])
        assert span["ph"] == "X" and span["name"] == build[0]
        assert isinstance(span["ts"], int) and span["ts"] >= 0 and span["dur"] > 0
        assert span["args"]["key"] == plan[build]["key"]
        assert span["args"]["reason"] == plan[build]["reason"]
    assert {s["args"]["result"] for s in spans} == {"built", "failed"}
    tracks = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {tracks[s["tid"]] for s in spans} <= {f"{AMD} slot 1", f"{AMD} slot 2"}
    (plan_phase,) = [e for e in events if e.get("cat") == "phase"]
    assert plan_phase["name"] == "plan" and plan_phase["ts"] == 0
    assert all(plan_phase["ts"] + plan_phase["dur"] <= s["ts"] for s in spans)
    skipped = [e for e in events if e["name"] == "skipped"]
    assert [(e["ph"], e["args"]["label"]) for e in skipped] == [("i", "//:after")]
