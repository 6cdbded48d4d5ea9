"""A daily series a PyPI package ships: Capital Bikeshare (Washington, DC) riders per day in 2011,
from the hourly ``Bikeshare.csv`` in the ISLP wheel (the data of "An Introduction to Statistical
Learning with Python"; UCI's bike-sharing data), for ``rnnforge train forecast --dataset csv``.

A city's counts with strong weekly and weather-driven swings, like the held-back series of issue
#32, 365 days long. Writes ``bikeshare_2011.csv`` (``date,riders``: the sum of the day's hourly
``bikers``; hours without a rental are absent from the source, not missing counts) and
``bikeshare_2011_holidays.txt`` (the days the source marks ``holiday``) into ``--out``.

    .venv/bin/python benchmarks/experiments/bikeshare_daily.py --out benchmarks/experiments/data

Reads ``--wheel FILE`` if given, else downloads the ISLP wheel with pip (no dependencies).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "ISLP/data/Bikeshare.csv"
YEAR = 2011


def download_wheel(folder: Path) -> Path:
    """The ISLP wheel, fetched by pip into ``folder``."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "ISLP", "-d", str(folder)],
        check=True,
        capture_output=True,
    )
    (wheel,) = folder.glob("*.whl")
    return wheel


def daily(hourly: str) -> tuple[list[tuple[datetime.date, int]], list[datetime.date]]:
    """(day, riders) for each day of the year, and the holidays, from the hourly CSV's text."""
    riders: dict[int, int] = {}
    holidays: set[int] = set()
    for row in csv.DictReader(io.StringIO(hourly)):
        day = int(row["day"])  # day of the year, 1-365
        riders[day] = riders.get(day, 0) + int(row["bikers"])
        if row["holiday"] == "1":
            holidays.add(day)
    first = datetime.date(YEAR, 1, 1)
    if sorted(riders) != list(range(1, 366)):
        raise SystemExit(f"error: {MEMBER} does not hold every day of {YEAR}")
    dates = {day: first + datetime.timedelta(days=day - 1) for day in riders}
    return [(dates[d], riders[d]) for d in sorted(riders)], [dates[d] for d in sorted(holidays)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/experiments/data"))
    parser.add_argument("--wheel", type=Path, help="an ISLP wheel already here (default: download one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        with zipfile.ZipFile(wheel) as archive:
            days, holidays = daily(archive.read(MEMBER).decode())
    args.out.mkdir(parents=True, exist_ok=True)
    series, holiday_file = args.out / f"bikeshare_{YEAR}.csv", args.out / f"bikeshare_{YEAR}_holidays.txt"
    series.write_text("date,riders\n" + "".join(f"{day.isoformat()},{count}\n" for day, count in days))
    holiday_file.write_text("".join(f"{day.isoformat()}\n" for day in holidays))
    print(f"{series}: {len(days)} days, {min(c for _, c in days)}-{max(c for _, c in days)} riders a day")
    print(f"{holiday_file}: {len(holidays)} holidays")
    return 0


if __name__ == "__main__":
    sys.exit(main())
