"""Validations kept under the state dir (`$K2_HOME/dq/<asset>/<partition>/`), as JSON and as a readable HTML page.

A validation is what one run's checks found for one asset, over everything the run wrote (partition `all`) or over
one ASX trading date.
"""

import html
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from k2_pipelines.lib.paths import state_dir
from k2_pipelines.lib.quality.checks import ERROR
from k2_pipelines.lib.quality.validate import SAMPLE_SIZE, Outcome

WHOLE_RUN = "all"


@dataclass
class Validation:
    asset: str
    run_id: str
    validated_at: datetime
    rows: int  # rows the run wrote that were checked
    outcomes: list[Outcome]
    partition: str = WHOLE_RUN
    notes: list[str] = field(default_factory=list)

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
    outcomes = {}
    for part in parts:
        for o in part.outcomes:
            total = outcomes.setdefault(o.check, Outcome(o.check, o.severity, o.description, True, 0, 0))
            total.passed &= o.passed
            total.failing += o.failing
            total.evaluated += o.evaluated
            total.sample += [{"partition": part.partition} | row for row in o.sample][: SAMPLE_SIZE - len(total.sample)]
            total.errors += o.errors
    return Validation(asset, run_id, validated_at, sum(p.rows for p in parts), list(outcomes.values()),
                      notes=[n for p in parts for n in p.notes])


def reports_dir() -> Path:
    return state_dir() / "dq"


def _stem(validation: Validation) -> Path:
    name = f"{validation.validated_at:%Y%m%dT%H%M%S%f}-{validation.run_id[:8]}"
    return reports_dir() / validation.asset / validation.partition / name


def save(validation: Validation) -> Path:
    """Write the validation's JSON and HTML; returns the HTML page's path."""
    stem = _stem(validation)
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = asdict(validation) | {"validated_at": validation.validated_at.isoformat(), "passed": validation.passed}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1, default=str))
    page = stem.with_suffix(".html")
    page.write_text(to_html(validation))
    return page


def _load(path: Path) -> Validation:
    record = json.loads(path.read_text())
    record.pop("passed")
    record["validated_at"] = datetime.fromisoformat(record["validated_at"])
    record["outcomes"] = [Outcome(**o) for o in record["outcomes"]]
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
    return "\n".join(lines)


def to_text(validation: Validation, page: Path | None = None) -> str:
    head = (f"{validation.asset} [{validation.partition}] run {validation.run_id} at "
            f"{validation.validated_at:%Y-%m-%d %H:%M:%S} UTC: {validation.rows:,} rows, {validation.verdict}")
    lines = [head] + [f"  {'ok  ' if o.passed else 'FAIL'} {o.severity:<5} {o.check:<28} {o.failing:>10,} failing of "
                      f"{o.evaluated:,}  {o.description}" for o in validation.outcomes]
    lines += [f"  note: {note}" for note in validation.notes]
    return "\n".join(lines + ([f"  report: {page}"] if page else []))


def _cell(value) -> str:
    return html.escape("" if value is None else str(value))


def _sample_table(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{_cell(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table class='sample'><tr>{head}</tr>{body}</table>"


def to_html(validation: Validation) -> str:
    failed = [o for o in validation.outcomes if not o.passed]
    rows = "".join(
        f"<tr class='{'ok' if o.passed else o.severity.lower()}'><td>{_cell(o.check)}</td><td>{o.severity}</td>"
        f"<td>{'passed' if o.passed else 'failed'}</td><td class='n'>{o.failing:,}</td><td class='n'>"
        f"{o.evaluated:,}</td><td>{_cell(o.description)}</td></tr>" for o in validation.outcomes)
    details = "".join(
        f"<h2 id='{_cell(o.check)}'>{_cell(o.check)}: {o.failing:,} failing</h2><p>{_cell(o.description)}</p>"
        + "".join(f"<p class='error'>{_cell(e)}</p>" for e in o.errors)
        + (_sample_table(o.sample) if o.sample else "") for o in failed)
    notes = "".join(f"<li>{_cell(n)}</li>" for n in validation.notes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>K2 data quality: {_cell(validation.asset)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #ccc; padding: .3rem .6rem; }}
td.n {{ text-align: right; }} tr.ok td:nth-child(3) {{ color: #176b2c; }}
tr.error td:nth-child(3) {{ color: #b00020; font-weight: bold; }} tr.warn td:nth-child(3) {{ color: #a15c00; }}
.sample td {{ font-family: monospace; font-size: .9em; }} .error {{ color: #b00020; }}
</style></head><body>
<h1>{_cell(validation.asset)} <small>[{_cell(validation.partition)}]</small>: {_cell(validation.verdict)}</h1>
<p>Run <code>{_cell(validation.run_id)}</code>, validated {validation.validated_at:%Y-%m-%d %H:%M:%S} UTC,
{validation.rows:,} rows checked with Great Expectations.</p>
<table><tr><th>check</th><th>severity</th><th>result</th><th>failing</th><th>of</th><th>what it expects</th></tr>
{rows}</table>
{f"<ul>{notes}</ul>" if notes else ""}
{details}
</body></html>
"""
