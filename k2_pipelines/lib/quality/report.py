"""Validations kept under the state dir (`$K2_HOME/dq/<asset>/<partition>/`), as JSON and as a readable HTML page.

A validation is what one run's checks found for one asset, over everything the run wrote (partition `all`) or over
one ASX trading date.
"""

import html
import json
import math
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from k2_pipelines.lib.quality.checks import ERROR
from k2_pipelines.lib.quality.validate import SAMPLE_SIZE, Outcome
from k2_pipelines.settings import state_dir

WHOLE_RUN = "all"
TREND_RUNS = 30  # runs a report's trend charts show, its own included
REPORTS_KEPT = 2_000  # per asset and partition: a week of drains at the lag sensor's 5-minute cadence


@dataclass
class SetAside:
    """Rows a run set aside under one rule or reason (dead letters of a drain, rejects of a load), with samples
    of where they came from (topic, partition, offset; or file and line) and why."""
    rule: str
    rows: int
    sample: list[dict] = field(default_factory=list)


@dataclass
class Validation:
    asset: str
    run_id: str
    validated_at: datetime
    rows: int  # rows the run wrote that were checked
    outcomes: list[Outcome]
    partition: str = WHOLE_RUN
    notes: list[str] = field(default_factory=list)
    set_aside: list[SetAside] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No ERROR check failed (failed WARN checks are warnings)."""
        return all(o.passed or o.severity != ERROR for o in self.outcomes)

    @property
    def verdict(self) -> str:
        failed = [o for o in self.outcomes if not o.passed]
        errors = sum(o.severity == ERROR for o in failed)
        if errors:
            return f"FAILED: {errors} of {len(self.outcomes)} checks failed"
        return f"passed with {len(failed)} warning{'' if len(failed) == 1 else 's'}" if failed \
            else f"passed all {len(self.outcomes)} checks"


def combined(asset: str, run_id: str, validated_at: datetime, parts: list[Validation]) -> Validation:
    """The run's validation from its partitions': a check passes where it passed in every one."""
    outcomes: dict[str, Outcome] = {}
    for part in parts:
        for o in part.outcomes:
            total = outcomes.setdefault(o.check, Outcome(o.check, o.severity, o.description, True, 0, 0))
            total.passed &= o.passed
            total.failing += o.failing
            total.evaluated += o.evaluated
            total.sample += [{"partition": part.partition} | row for row in o.sample][: SAMPLE_SIZE - len(total.sample)]
            total.errors += o.errors
    set_aside: dict[str, SetAside] = {}
    for part in parts:
        for s in part.set_aside:
            aside = set_aside.setdefault(s.rule, SetAside(s.rule, 0))
            aside.rows += s.rows
            aside.sample += [{"partition": part.partition} | row for row in s.sample][: SAMPLE_SIZE - len(aside.sample)]
    return Validation(asset, run_id, validated_at, sum(p.rows for p in parts), list(outcomes.values()),
                      notes=[n for p in parts for n in p.notes], set_aside=list(set_aside.values()))


def reports_dir() -> Path:
    return state_dir() / "dq"


def _stem(validation: Validation) -> Path:
    name = f"{validation.validated_at:%Y%m%dT%H%M%S%f}-{validation.run_id[:8]}"
    return reports_dir() / validation.asset / validation.partition / name


def save(validation: Validation) -> Path:
    """Write the validation's JSON and HTML, with the trend of its asset and partition's recent runs; returns the
    HTML page's path. The folder keeps the newest REPORTS_KEPT reports: older ones are deleted here."""
    stem = _stem(validation)
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = asdict(validation) | {"validated_at": validation.validated_at.isoformat(), "passed": validation.passed}
    # written aside and renamed, so a concurrent run's trend or `k2 dq report` never reads half a record
    partial = stem.parent / f"{stem.name}.json.partial"
    partial.write_text(json.dumps(record, indent=1, default=str))
    os.replace(partial, stem.with_suffix(".json"))
    kept = sorted(stem.parent.glob("*.json"))  # names sort in time order; the folder is bounded below
    for old in kept[:-REPORTS_KEPT]:
        old.unlink(missing_ok=True)
        old.with_suffix(".html").unlink(missing_ok=True)
    page = stem.with_suffix(".html")
    page.write_text(to_html(validation, _earlier(kept[-REPORTS_KEPT:], stem)))
    return page


def _earlier(kept: list[Path], own: Path) -> list[Validation]:
    """Of the reports kept (oldest first), the newest TREND_RUNS - 1 from before `own`: only those are read."""
    found = []
    for path in [p for p in kept if p.stem < own.name][-(TREND_RUNS - 1):]:
        try:
            found.append(_load(path))
        except (OSError, ValueError):  # removed meanwhile, or damaged: a gap in the trend, not a failed check
            continue
    return found


def _load(path: Path) -> Validation:
    record = json.loads(path.read_text())
    record.pop("passed")
    record["validated_at"] = datetime.fromisoformat(record["validated_at"])
    record["outcomes"] = [Outcome(**o) for o in record["outcomes"]]
    record["set_aside"] = [SetAside(**s) for s in record.get("set_aside", [])]  # older reports have none
    return Validation(**record)


def latest(asset: str | None = None, partition: str | None = None) -> list[tuple[Validation, Path]]:
    """The newest validation (and its HTML page) of each asset and partition kept, filtered by asset/partition."""
    found = []
    for folder in sorted(reports_dir().glob(f"{asset or '*'}/{partition or '*'}")):
        pages = sorted(folder.glob("*.json"))
        if pages:
            found.append((_load(pages[-1]), pages[-1].with_suffix(".html")))
    return found


def markdown(validation: Validation) -> str:
    lines = ["| check | severity | result | failing |", "| --- | --- | --- | ---: |"]
    lines += [f"| {o.check} | {o.severity} | {'passed' if o.passed else 'FAILED'} | {o.failing:,} |"
              for o in validation.outcomes]
    if validation.set_aside:
        lines += ["", "| set aside by | rows |", "| --- | ---: |"]
        lines += [f"| {s.rule} | {s.rows:,} |" for s in validation.set_aside]
    return "\n".join(lines)


def to_text(validation: Validation, page: Path | None = None) -> str:
    head = (f"{validation.asset} [{validation.partition}] run {validation.run_id} at "
            f"{validation.validated_at:%Y-%m-%d %H:%M:%S} UTC: {validation.rows:,} rows, {validation.verdict}")
    lines = [head] + [f"  {'ok  ' if o.passed else 'FAIL'} {o.severity:<5} {o.check:<28} {o.failing:>10,} failing of "
                      f"{o.evaluated:,}  {o.description}" for o in validation.outcomes]
    lines += [f"  set aside  {s.rule:<28} {s.rows:>10,} rows" for s in validation.set_aside]
    lines += [f"  note: {note}" for note in validation.notes]
    return "\n".join(lines + ([f"  report: {page}"] if page else []))


def _cell(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _sample_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{_cell(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table class='sample'><tr>{head}</tr>{body}</table>"


_FILL = {"error": "#b00020", "warn": "#d08a00", "ok": "#9aa5a0", "set-aside": "#4a6fa5"}
_CHART_WIDTH, _CHART_HEIGHT = 240, 100
_PLOT_LEFT, _PLOT_RIGHT, _PLOT_TOP, _PLOT_BOTTOM = 8, 232, 34, 80


def _run_label(validation: Validation) -> str:
    return f"{validation.validated_at:%Y-%m-%d %H:%M:%S} run {validation.run_id[:8]}"


def _chart(name: str, counted: str, runs: list[Validation], bars: list[tuple[int, str, str] | None]) -> str:
    """A small inline SVG bar chart with one bar per run, oldest first: `bars` holds each run's (value, kind, tooltip),
    None where the run has no value. Its log scale is its own, so one huge count flattens neither the others nor
    another chart."""
    top = max((bar[0] for bar in bars if bar), default=0)
    last = f"{bars[-1][0]:,}" if bars[-1] else "none"
    slot = (_PLOT_RIGHT - _PLOT_LEFT) / len(runs)
    width = min(slot * 0.75, 16)
    shapes = []
    for i, bar in enumerate(bars):
        if bar:
            value, kind, tooltip = bar
            # a zero is a thin tick on the axis; any other count at least 3 px, so it is told from a zero
            height = max(3, (_PLOT_BOTTOM - _PLOT_TOP) * math.log1p(value) / math.log1p(top)) if value else 1
            shapes.append(f"<rect class='bar {kind}' x='{_PLOT_LEFT + i * slot + (slot - width) / 2:.1f}' "
                          f"y='{_PLOT_BOTTOM - height:.1f}' width='{width:.1f}' height='{height:.1f}' "
                          f"fill='{_FILL[kind]}'><title>{_cell(tooltip)}</title></rect>")
    first_at, last_at = (f"{v.validated_at:%Y-%m-%d %H:%M}" for v in (runs[0], runs[-1]))
    dates = f"<text x='{_PLOT_LEFT}' y='{_CHART_HEIGHT - 6}'>{first_at}</text>"
    if len(runs) > 1:
        dates += f"<text x='{_PLOT_RIGHT}' y='{_CHART_HEIGHT - 6}' text-anchor='end'>{last_at}</text>"
    span = f"run {first_at}" if len(runs) == 1 else f"{len(runs)} runs, {first_at} to {last_at}"
    title = f"{name}: {counted} per run over {span}; last {last}, max {top:,}"
    return (f"<svg class='chart' role='img' width='{_CHART_WIDTH}' height='{_CHART_HEIGHT}' "
            f"viewBox='0 0 {_CHART_WIDTH} {_CHART_HEIGHT}'><title>{_cell(title)}</title>"
            f"<text class='name' x='{_PLOT_LEFT}' y='13'>{_cell(name)}</text>"
            f"<text x='{_PLOT_LEFT}' y='27'>last <tspan class='last'>{last}</tspan> \u00b7 max "
            f"<tspan class='max'>{top:,}</tspan> {_cell(counted)}</text>"
            f"<line x1='{_PLOT_LEFT}' x2='{_PLOT_RIGHT}' y1='{_PLOT_BOTTOM + .5}' y2='{_PLOT_BOTTOM + .5}' "
            f"stroke='#ccc'/>{''.join(shapes)}{dates}</svg>")


def _check_bar(run: Validation, outcome: Outcome | None) -> tuple[int, str, str] | None:
    if outcome is None:  # the check was not in the catalogue then
        return None
    kind = "ok" if outcome.passed else "error" if outcome.severity == ERROR else "warn"
    return outcome.failing, kind, (f"{_run_label(run)}: {outcome.failing:,} failing of {outcome.evaluated:,}, "
                                   f"{'passed' if outcome.passed else 'failed'}")


def _set_aside_bar(run: Validation, rule: str | None = None) -> tuple[int, str, str]:
    rows = sum(s.rows for s in run.set_aside if rule is None or s.rule == rule)
    return rows, "set-aside", f"{_run_label(run)}: {rows:,} rows set aside{f' by {rule}' if rule else ''}"


def _trend(runs: list[Validation]) -> str:
    """Small multiples over the runs, oldest first: each check's failing count per run, then the rows set aside
    (in all, and by rule when there are several rules)."""
    outcomes = [{o.check: o for o in run.outcomes} for run in runs]
    checks = dict.fromkeys(o.check for run in reversed(runs) for o in run.outcomes)  # the newest run's order first
    charts = [_chart(check, "failing", runs, [_check_bar(run, by.get(check)) for run, by in zip(runs, outcomes)])
              for check in checks]
    rules = list(dict.fromkeys(s.rule for run in reversed(runs) for s in run.set_aside))
    if rules:
        charts.append(_chart("rows set aside", "rows", runs, [_set_aside_bar(run) for run in runs]))
    if len(rules) > 1:
        charts += [_chart(f"set aside: {rule}", "rows", runs, [_set_aside_bar(run, rule) for run in runs])
                   for rule in rules]
    return "\n".join(charts)


def _set_aside_table(validation: Validation) -> str:
    rows = "".join(f"<tr><td><a href='#set-aside-{_cell(s.rule)}'>{_cell(s.rule)}</a></td>"
                   f"<td class='n'>{s.rows:,}</td></tr>" for s in validation.set_aside)
    return f"<table class='set-aside'><tr><th>rule</th><th>rows</th></tr>{rows}</table>" if rows \
        else "<p>None: the run set no rows aside.</p>"


def to_html(validation: Validation, earlier: list[Validation] | None = None) -> str:
    """The validation's page, with a trend over `earlier` runs of its asset and partition (oldest first) and it."""
    runs = [*(earlier or []), validation]
    failed = [o for o in validation.outcomes if not o.passed]
    rows = "".join(
        f"<tr class='{'ok' if o.passed else o.severity.lower()}'><td>{_cell(o.check)}</td><td>{o.severity}</td>"
        f"<td>{'passed' if o.passed else 'failed'}</td><td class='n'>{o.failing:,}</td><td class='n'>"
        f"{o.evaluated:,}</td><td>{_cell(o.description)}</td></tr>" for o in validation.outcomes)
    details = "".join(
        f"<h2 id='{_cell(o.check)}'>{_cell(o.check)}: {o.failing:,} failing</h2><p>{_cell(o.description)}</p>"
        + "".join(f"<p class='error'>{_cell(e)}</p>" for e in o.errors)
        + (_sample_table(o.sample) if o.sample else "") for o in failed)
    set_aside_samples = "".join(
        f"<h2 id='set-aside-{_cell(s.rule)}'>set aside by {_cell(s.rule)}: {s.rows:,} rows</h2>"
        + (_sample_table(s.sample) if s.sample else "") for s in validation.set_aside)
    notes = "".join(f"<li>{_cell(n)}</li>" for n in validation.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>K2 data quality: {_cell(validation.asset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
td.n {{ text-align: right; }} tr.ok td:nth-child(3) {{ color: #176b2c; }}
tr.error td:nth-child(3) {{ color: #b00020; font-weight: bold; }} tr.warn td:nth-child(3) {{ color: #a15c00; }}
.sample td {{ font-family: monospace; font-size: .9em; }} .error {{ color: #b00020; }}
.charts {{ display: flex; flex-wrap: wrap; gap: .8rem; }} .chart {{ border: 1px solid #e4e4e4; }}
.chart text {{ font-size: 10px; fill: #555; }} .chart text.name {{ font-size: 12px; font-weight: bold; fill: #222; }}
.caption {{ color: #555; }}
</style></head><body>
<h1>{_cell(validation.asset)} <small>[{_cell(validation.partition)}]</small>: {_cell(validation.verdict)}</h1>
<p>Run <code>{_cell(validation.run_id)}</code>, validated {validation.validated_at:%Y-%m-%d %H:%M:%S} UTC,
{validation.rows:,} rows checked with Great Expectations.</p>
<table><tr><th>check</th><th>severity</th><th>result</th><th>failing</th><th>of</th><th>what it expects</th></tr>
{rows}</table>
{f"<ul>{notes}</ul>" if notes else ""}
<h2 id='set-aside'>Rows set aside: {sum(s.rows for s in validation.set_aside):,}</h2>
{_set_aside_table(validation)}
<h2 id='trend'>The last {len(runs)} run{'' if len(runs) == 1 else 's'}</h2>
<p class='caption'>Oldest to newest, each chart on a log scale of its own; hover a bar for its run. Red: a failed
ERROR check, amber: a failed WARN check, grey: passed, blue: rows set aside.</p>
<div class='charts'>
{_trend(runs)}
</div>
{details}
{set_aside_samples}
</body></html>
"""
