"""The data-quality report pages: rows set aside by rule with their samples, and inline SVG charts of each check's
failing count and the rows set aside over the asset's recent runs."""

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

from k2_pipelines.lib.quality import report
from k2_pipelines.lib.quality.checks import ERROR, WARN
from k2_pipelines.lib.quality.report import (
    TREND_RUNS,
    SetAside,
    Validation,
    combined,
    latest,
    markdown,
    save,
    to_html,
    to_text,
)
from k2_pipelines.lib.quality.validate import Outcome
from k2_pipelines_tests.ui_helpers import chromium_page

START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)
SEVERITIES = {"unique_ids": ERROR, "out_of_hours": WARN, "book_not_crossed": ERROR}
# failing counts per run, oldest first: one huge count, zeros, a failed ERROR check in two runs
FAILING = {"unique_ids": [0, 0, 3, 0, 1], "out_of_hours": [10, 250, 0, 40_000, 7], "book_not_crossed": [0, 0, 0, 0, 0]}
SET_ASIDE = [{"book_not_crossed": 4}, {}, {"book_not_crossed": 2, "AvroDecodeError": 1}, {},
             {"book_not_crossed": 12, "AvroDecodeError": 3}]
# a failed WARN check leaves the run passed; a failed ERROR check fails it
PASSES = {"unique_ids": lambda failing: failing == 0, "out_of_hours": lambda failing: failing < 100,
          "book_not_crossed": lambda failing: failing == 0}


def _validation(run: int, failing: dict[str, int], set_aside: dict[str, int], partition: str = "all") -> Validation:
    outcomes = [Outcome(check, SEVERITIES[check], f"what {check} expects", PASSES[check](n), n, 1_000)
                for check, n in failing.items()]
    kept = [SetAside(rule, rows, [{"partition": 0, "offset": 1_000 * run + i, "detail": f"{rule} <{i}>"}
                                  for i in range(min(rows, 3))]) for rule, rows in set_aside.items()]
    return Validation("binance_quotes", f"run{run:04d}-aaaa-bbbb", START + timedelta(hours=run), 1_000, outcomes,
                      partition, set_aside=kept)


def _runs(count: int) -> list[Validation]:
    return [_validation(run, {check: counts[run % len(counts)] for check, counts in FAILING.items()},
                        SET_ASIDE[run % len(SET_ASIDE)]) for run in range(count)]


class _Page(HTMLParser):
    """A page's tables as a browser reads them: each with the heading before it and its rows of cells."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.headings = [], []
        self._heading = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"after": self.headings[-1] if self.headings else None, "rows": []})
        elif tag == "tr":
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1]["rows"][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "h2":
            self.headings.append("".join(self._heading))
            self._heading = None

    def handle_data(self, data):
        for text in (self._cell, self._heading):
            if text is not None:
                text.append(data)


def _charts(page: str) -> dict[str, ET.Element]:
    """The page's SVG charts by the name each shows."""
    charts = [ET.fromstring(svg) for svg in re.findall(r"<svg\b.*?</svg>", page, re.DOTALL)]
    return {chart.find("text[@class='name']").text: chart for chart in charts}


def _bars(chart: ET.Element) -> list[tuple[int, str, float]]:
    """Each bar's count (as its tooltip says it), kind and height."""
    return [(int(re.search(r": ([\d,]+) ", bar.find("title").text).group(1).replace(",", "")),
             bar.get("class").removeprefix("bar "), float(bar.get("height"))) for bar in chart.iter("rect")]


def _table(page: _Page, after: str) -> list[list[str]]:
    return next(t["rows"] for t in page.tables if t["after"] == after)


def test_a_report_shows_the_rows_set_aside_and_a_chart_per_check_over_the_runs_kept(k2_home):
    runs = _runs(5)
    pages = [save(run) for run in runs]
    text = pages[-1].read_text()

    page = _Page(text)
    assert _table(page, "Rows set aside: 15") == [["rule", "rows"], ["book_not_crossed", "12"],
                                                  ["AvroDecodeError", "3"]]
    assert _table(page, "set aside by book_not_crossed: 12 rows") == [["partition", "offset", "detail"]] + [
        ["0", f"{4_000 + i}", f"book_not_crossed <{i}>"] for i in range(3)]
    assert _table(page, "set aside by AvroDecodeError: 3 rows") == [["partition", "offset", "detail"]] + [
        ["0", f"{4_000 + i}", f"AvroDecodeError <{i}>"] for i in range(3)]

    charts = _charts(text)
    assert list(charts) == [*FAILING, "rows set aside", "set aside: book_not_crossed", "set aside: AvroDecodeError"]
    for check, counts in FAILING.items():
        chart = charts[check]
        assert chart[0].tag == "title" and chart[0].text.startswith(f"{check}: failing per run over 5 runs, "
                                                                    "2025-03-03 09:00 to 2025-03-03 13:00")
        bars = _bars(chart)
        assert [count for count, _, _ in bars] == counts  # one bar per run saved, oldest first
        assert [kind for _, kind, _ in bars] == [
            "ok" if PASSES[check](n) else SEVERITIES[check].lower() for n in counts]
        assert chart.find(".//tspan[@class='last']").text == f"{counts[-1]:,}"
        assert chart.find(".//tspan[@class='max']").text == f"{max(counts):,}"
        heights = [height for _, _, height in bars]  # taller for more, and a zero is lower than any count
        assert sorted(heights) == [h for _, h in sorted(zip(counts, heights))]
        assert all(height == 1 for count, _, height in bars if count == 0)
    assert [count for count, _, _ in _bars(charts["rows set aside"])] == [sum(s.values()) for s in SET_ASIDE]
    assert [count for count, _, _ in _bars(charts["set aside: AvroDecodeError"])] == [
        s.get("AvroDecodeError", 0) for s in SET_ASIDE]
    assert [chart.find("text[last()]").text for chart in charts.values()] == ["2025-03-03 13:00"] * len(charts)

    assert "<script" not in text.lower() and not re.search(r"https?://", text)


def test_a_report_reads_only_the_newest_runs_of_its_asset_and_partition(k2_home, monkeypatch):
    runs = _runs(TREND_RUNS + 5)
    for run in runs[:-1]:
        save(run)
    save(_validation(99, {"unique_ids": 50}, {}, partition="2025-03-03"))  # another partition's, not in the trend
    loaded, load = [], report._load
    monkeypatch.setattr(report, "_load", lambda path: loaded.append(path) or load(path))

    text = save(runs[-1]).read_text()
    assert len(loaded) == TREND_RUNS - 1
    bars = _bars(_charts(text)["out_of_hours"])
    assert [count for count, _, _ in bars] == [run.outcomes[1].failing for run in runs[-TREND_RUNS:]]
    assert f"The last {TREND_RUNS} runs" in text

    # a report saved late for an earlier run shows the runs before it only
    late = _validation(2, {"unique_ids": 8}, {})
    late.validated_at += timedelta(minutes=30)
    assert [count for count, _, _ in _bars(_charts(save(late).read_text())["unique_ids"])] == [0, 0, 3, 8]


def test_a_report_folder_keeps_the_newest_reports_only(k2_home, monkeypatch):
    monkeypatch.setattr(report, "REPORTS_KEPT", 4)
    runs = _runs(7)
    pages = [save(run) for run in runs]
    folder = pages[0].parent
    assert sorted(p.name for p in folder.iterdir()) == sorted(n for page in pages[-4:]
                                                              for n in (page.name, page.with_suffix(".json").name))
    assert [v.run_id for v, _ in report.latest(runs[0].asset)] == [runs[-1].run_id]


def test_an_older_report_without_rows_set_aside_still_loads_and_charts(k2_home):
    older = _validation(0, {"unique_ids": 2}, {})
    record = asdict(older) | {"validated_at": older.validated_at.isoformat(), "passed": older.passed}
    del record["set_aside"]
    folder = report.reports_dir() / older.asset / older.partition
    folder.mkdir(parents=True)
    (folder / "20250303T090000000000-run0000-.json").write_text(json.dumps(record))

    [(loaded, _)] = latest(older.asset)
    assert loaded.set_aside == [] and loaded.outcomes == older.outcomes

    text = save(_validation(1, {"unique_ids": 0}, {"book_not_crossed": 5})).read_text()
    charts = _charts(text)
    assert [count for count, _, _ in _bars(charts["unique_ids"])] == [2, 0]
    assert [count for count, _, _ in _bars(charts["rows set aside"])] == [0, 5]
    assert "set aside: book_not_crossed" not in charts  # one rule: its rows are the chart of all


def test_text_markdown_and_a_single_run_page_show_the_rows_set_aside():
    run = _validation(4, {"unique_ids": 1}, {"book_not_crossed": 12, "AvroDecodeError": 3})
    assert to_text(run).splitlines()[-2:] == [f"  set aside  {rule:<28} {rows:>10} rows"
                                              for rule, rows in (("book_not_crossed", 12), ("AvroDecodeError", 3))]
    assert markdown(run).split("\n\n")[1].splitlines() == [
        "| set aside by | rows |", "| --- | ---: |", "| book_not_crossed | 12 |", "| AvroDecodeError | 3 |"]
    assert "set aside" not in markdown(_validation(1, {"unique_ids": 0}, {}))

    charts = _charts(to_html(run))
    assert [len(_bars(chart)) for chart in charts.values()] == [1] * 4
    assert charts["unique_ids"][0].text.startswith("unique_ids: failing per run over run 2025-03-03 13:00")


def test_a_runs_validation_adds_up_the_rows_its_partitions_set_aside():
    def rejects(day: str, rule: str, rows: int) -> SetAside:
        return SetAside(rule, rows, [{"source_file": f"{day}.csv", "line_number": line} for line in range(rows)])

    days = [_validation(0, {"unique_ids": 0}, {}, "2025-03-03"), _validation(1, {"unique_ids": 0}, {}, "2025-03-04")]
    days[0].set_aside = [rejects("2025-03-03", "bad_price", 8)]
    days[1].set_aside = [rejects("2025-03-04", "bad_price", 4), rejects("2025-03-04", "bad_time", 1)]
    run = combined("asx_quotes", "run", START, days)
    assert [(s.rule, s.rows) for s in run.set_aside] == [("bad_price", 12), ("bad_time", 1)]
    assert [(row["partition"], row["line_number"]) for row in run.set_aside[0].sample] == [
        ("2025-03-03", line) for line in range(8)] + [("2025-03-04", 0), ("2025-03-04", 1)]  # SAMPLE_SIZE of them
    assert run.set_aside[1].sample == [{"partition": "2025-03-04", "source_file": "2025-03-04.csv", "line_number": 0}]


def test_chromium_renders_the_charts_of_a_saved_report(k2_home, tmp_path):
    page_path = [save(run) for run in _runs(5)][-1]
    problems = []
    with chromium_page(page_path.parent.as_uri() + "/") as page:
        page.on("console", lambda message: message.type in ("error", "warning") and problems.append(message.text))
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.on("request", lambda request: request.url.startswith("file:") or problems.append(request.url))
        page.goto(page_path.name)
        charts = page.locator("svg.chart")
        assert charts.count() == 6
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box["width"] >= 240 and box["height"] >= 100  # and its border
            bars = [charts.nth(i).locator("rect").nth(b).bounding_box() for b in range(5)]
            assert all(bar["width"] > 0 and bar["height"] >= 1 and box["y"] < bar["y"] < box["y"] + box["height"]
                       for bar in bars)
        page.screenshot(path=tmp_path / "report.png", full_page=True)  # to look at, when it fails
    assert problems == []
