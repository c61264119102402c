import csv
import re

from k2_pipelines.cli import main
from k2_pipelines.lib.asx.sample import DEFAULT_START

TRADE = re.compile(r"\d\d/\d\d/\d{4},\d\d:\d\d:\d\d\.\d{3},\d+\.\d{3},\d+,\d+,X?,(\d+\.\d+)?")
QUOTE = re.compile(r"\d\d/\d\d/\d{4},\d\d:\d\d:\d\d\.\d{3},\d+\.\d{3},\d+\.\d{3},\d+,\d+")


def test_sample_is_deterministic_and_in_the_asx_format(tmp_path, capsys):
    args = ["sample", "asx", "--days", "3", "--symbols", "BHP,RIO,MWR", "--trades", "20000"]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.csv"))
    assert [str(f) for f in files] == ["company_info.csv", "quotes/3153.csv", "quotes/7078.csv", "quotes/7458.csv",
                                       "trades/3153.csv", "trades/7078.csv", "trades/7458.csv"]
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()

    info = list(csv.DictReader((tmp_path / "a" / "company_info.csv").open()))
    assert {row["symbol"]: row["company_id"] for row in info} == {"BHP": "7078", "RIO": "7458", "MWR": "3153"}

    counts = {}
    for kind, pattern in (("trades", TRADE), ("quotes", QUOTE)):
        for path in (tmp_path / "a" / kind).glob("*.csv"):
            data = path.read_bytes()
            assert data.endswith(b"\r\n") and b"\n" not in data.replace(b"\r\n", b"")  # CRLF only, no header
            lines = data.decode().split("\r\n")[:-1]
            assert all(pattern.fullmatch(line) for line in lines), path
            times = [line.split(",")[1] for line in lines]
            counts[(kind, path.stem)] = len(lines)
            assert any(t < "10:00" for t in times) and all("05:40" <= t <= "18:50" for t in times)  # pre-open prints
    trades = [counts[("trades", c)] for c in ("7078", "7458", "3153")]
    assert trades[0] > 1.5 * trades[1] and trades[1] > 1.3 * trades[2]  # very uneven activity per symbol
    assert sum(counts[("quotes", c)] for c in ("7078", "7458", "3153")) > 1.5 * sum(trades)  # a few quotes per trade
    assert DEFAULT_START.strftime("%m/%d/%Y") in (tmp_path / "a" / "trades" / "7078.csv").read_text()
