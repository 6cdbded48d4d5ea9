"""Daily univariate series for the forecast task: loading, checking, splitting by date, windows.

Sources:
- ``cta_ridership``: the Chicago Transit Authority "Daily Boarding Totals" CSV (columns
  ``service_date`` MM/DD/YYYY, ``day_type``, ``bus``, ``rail_boardings``, ``total_rides``), from
  ``--data-dir`` (the file or its folder) or downloaded from the City of Chicago data portal.
- ``csv``: any daily series, ``--data-dir FILE --date-column NAME --value-column NAME``.
- ``synthetic``: embedded, ridership-like (weekly and yearly seasonality, trend, holidays, noise).

Every loader returns a ``pandas.Series`` of float64 indexed by consecutive days, or raises a
``UserError`` naming the file, row or column. Run ``python -m pipeline.timeseries FILE`` to check
a CSV.
"""

from __future__ import annotations

import csv
import os
import re
import sys
import urllib.request
from pathlib import Path

import numpy as np

from rnnforge.core import fileio
from rnnforge.core.errors import UserError, first_line

CTA_FILE_NAME = "CTA_-_Ridership_-_Daily_Boarding_Totals.csv"
CTA_URL = "https://data.cityofchicago.org/api/views/6iiy-9s97/rows.csv?accessType=DOWNLOAD"
CTA_DATE_COLUMN = "service_date"
CTA_DATE_FORMAT = "%m/%d/%Y"
CTA_SERIES = {"rail": "rail_boardings", "bus": "bus", "total": "total_rides"}
CTA_DAY_TYPE_COLUMN = "day_type"
#: A holidays file's dates: ISO 8601's calendar form only.
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


def read_daily_csv(
    path: Path, date_column: str, value_column: str, date_format: str | None = None, fill_missing: str = "none"
):
    """Read one daily series from a CSV: parse dates, drop exact duplicate rows, sort, check.

    Refuses (one line naming file, row or column): a missing column, an unparsable date, a
    NaN/negative/non-numeric value or one beyond float32, two different values for one day
    (``1010`` and ``1010.0`` are one value), and missing days unless
    ``fill_missing="interpolate"``. Row numbers are the file's line numbers (header = line 1).
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file (expected a daily CSV)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not a readable CSV: {first_line(exc)}") from None
    for column, option in ((date_column, "--date-column"), (value_column, "--value-column")):
        if column not in frame.columns:
            raise UserError(
                f"{path} has no column {column!r} ({option}); columns: {first_few(frame.columns, 'columns')}"
            )
        check_header(path, column, option)
    frame = frame[[date_column, value_column]]
    lines = pd.Series(np.arange(len(frame)) + 2, index=frame.index)
    frame = frame.drop_duplicates()
    if frame.empty:
        raise UserError(f"{path} has no data rows")
    dates = parse_dates(frame[date_column].str.strip(), date_format)
    bad = dates.isna()
    if bad.any():
        row = bad.idxmax()
        raise UserError(
            f"{path} line {lines[row]}: cannot parse {date_column} {frame.at[row, date_column]!r} as a date"
            + (f" ({date_format})" if date_format else "")
        )
    values = pd.to_numeric(frame[value_column].str.strip(), errors="coerce")
    with np.errstate(over="ignore"):
        in_float32 = np.isfinite(values.to_numpy(np.float64).astype(np.float32))
    bad = values.isna() | ~np.isfinite(values) | (values < 0) | ~in_float32
    if bad.any():
        row = bad.idxmax()
        raise UserError(
            f"{path} line {lines[row]}: {value_column} {frame.at[row, value_column]!r} is not a non-negative number "
            f"within float32 range (at most {float(np.finfo(np.float32).max):.3g}; the model computes in float32)"
        )
    pairs = pd.DataFrame({"day": dates.to_numpy(), "value": values.to_numpy(np.float64)}).drop_duplicates()
    series = pd.Series(pairs["value"].to_numpy(), index=pairs["day"].to_numpy(), name=value_column).sort_index()
    clash = series.index.duplicated(keep=False)
    if clash.any():
        day = series.index[clash][0]
        raise UserError(
            f"{path}: {day:%Y-%m-%d} appears with different {value_column} values "
            f"({', '.join(f'{v:g}' for v in series[day])})"
        )
    return fill_days(series, path, fill_missing)


def parse_dates(strings, date_format: str | None = None):
    """Dates of ``strings`` (NaT where unparsable). Timestamps with a time zone (``Z``, ``+05:00``,
    mixed offsets) are converted to UTC, then their date is taken; naive ones are taken as written."""
    import pandas as pd

    try:
        dates = pd.to_datetime(strings, format=date_format, errors="coerce")
    except (ValueError, TypeError):  # mixed offsets, or aware beside naive: one zone for all
        dates = pd.to_datetime(strings, format=date_format, errors="coerce", utc=True)
    if dates.isna().any():  # a zone after naive dates is coerced to NaT unless all go to UTC
        in_utc = pd.to_datetime(strings, format=date_format, errors="coerce", utc=True)
        dates = in_utc if in_utc.isna().sum() < dates.isna().sum() else dates
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None).dt.normalize()
    return dates


def first_few(names, noun: str, shown: int = 8) -> str:
    """``W, A, U``, or ``c1, c2, ..., c8, ... (2000 codes)`` where the list would fill a screen."""
    names = [str(name) for name in names]
    if len(names) <= shown:
        return ", ".join(names)
    return f"{', '.join(names[:shown])}, ... ({len(names)} {noun})"


def check_header(path: Path, column: str, option: str) -> None:
    """Refuse a header that names ``column`` more than once: pandas would read the first of them
    and call the others ``NAME.1``, ``NAME.2``, so a run would train on one without a word."""
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as text:
        header = next(csv.reader(text), [])
    places = [str(i) for i, name in enumerate(header, start=1) if name == column]
    if len(places) > 1:
        raise UserError(
            f"{path}: the header names column {column!r} ({option}) {len(places)} times (columns "
            f"{', '.join(places)}): rename all but the one to read"
        )


def fill_days(series, source, fill_missing: str = "none"):
    """Check that ``series`` has every day; fill gaps by linear interpolation if asked."""
    import pandas as pd

    full = pd.date_range(series.index.min(), series.index.max(), freq="D")
    missing = full.difference(series.index)
    if len(missing) and fill_missing != "interpolate":
        raise UserError(
            f"{source}: {len(missing)} missing day(s), first {missing[0]:%Y-%m-%d}; "
            "pass --fill-missing interpolate to fill them"
        )
    return series.reindex(full).interpolate(method="linear") if len(missing) else series.asfreq("D")


def cta_csv_path(data_dir: str | None) -> Path:
    """The CTA CSV: ``data_dir`` (file or folder) or the cached download (downloaded if absent)."""
    if data_dir:
        path = Path(data_dir)
        path = path / CTA_FILE_NAME if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"{path} does not exist (--data-dir: the CTA daily boardings CSV or its folder)")
        return path
    cached = (
        Path(os.environ.get("RNNFORGE_CACHE", Path.home() / ".cache" / "rnnforge")) / "cta_ridership" / CTA_FILE_NAME
    )
    if not cached.is_file():
        download(CTA_URL, cached)
    return cached


def download(url: str, target: Path) -> Path:
    """Download ``url`` to ``target`` with a progress line; the file appears only when complete."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response, fileio.atomic_path(target) as tmp:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            with open(tmp, "wb") as out:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    done += len(chunk)
                    share = f" ({100 * done / total:.0f}%)" if total else ""
                    sys.stderr.write(f"\rdownloading {url}: {done / 1e6:.1f} MB{share}")
            sys.stderr.write("\n")
    except OSError as exc:
        raise UserError(f"cannot download {url} ({exc}); download it by hand and pass --data-dir") from None
    return target


def load_cta(data_dir: str | None, series: str = "rail", fill_missing: str = "none"):
    """The CTA daily boardings of ``series`` (rail, bus or total)."""
    if series not in CTA_SERIES:
        raise UserError(f"--series {series!r} is not one of {', '.join(CTA_SERIES)}")
    return read_daily_csv(cta_csv_path(data_dir), CTA_DATE_COLUMN, CTA_SERIES[series], CTA_DATE_FORMAT, fill_missing)


def read_day_types(path: Path, date_column: str, column: str, date_format: str | None = None):
    """The day-type codes of a CSV's ``column``: a ``pandas.DataFrame`` indexed by day with the
    ``code`` (stripped string) and the file ``line`` it came from (header = line 1).

    Refuses (one line naming file and line): a missing column, an empty code, an unparsable date
    and one day with two different codes. Exact duplicate rows count once, as for the values."""
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise UserError(f"{path} is not a readable CSV: {first_line(exc)}") from None
    if column not in frame.columns:
        raise UserError(
            f"{path} has no column {column!r} (--day-type-column); columns: {first_few(frame.columns, 'columns')}"
        )
    check_header(path, column, "--day-type-column")
    frame = pd.DataFrame(
        {"day": parse_dates(frame[date_column].str.strip(), date_format), "code": frame[column].str.strip()}
    )
    frame["line"] = np.arange(len(frame)) + 2
    bad = frame["day"].isna() | (frame["code"] == "")
    if bad.any():
        row = frame[bad].iloc[0]
        what = "no day-type code" if pd.notna(row["day"]) else "an unparsable date"
        raise UserError(f"{path} line {row['line']}: {what} ({column} {row['code']!r})")
    frame = frame.drop_duplicates(["day", "code"]).set_index("day").sort_index()
    clash = frame.index.duplicated(keep=False)
    if clash.any():
        rows = frame[clash]
        raise UserError(
            f"{path} line {rows['line'].iloc[1]}: {rows.index[0]:%Y-%m-%d} has two {column} codes "
            f"({', '.join(map(repr, rows.loc[rows.index[0], 'code']))})"
        )
    return frame


def read_holidays(path: Path) -> set:
    """The dates of a holidays file, one ISO date (``YYYY-MM-DD``) a line; blank lines and ``#``
    comments are skipped. A line that is not a date is refused, naming file and line."""
    import datetime

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file (--holidays: one ISO date a line)")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a BOM is skipped, as pandas does for the CSV
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be read as text (--holidays): {exc}") from None
    days = set()
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            if not ISO_DAY.fullmatch(text):  # fromisoformat also takes 20170704 and 2016-W27-1
                raise ValueError(text)
            days.add(np.datetime64(datetime.date.fromisoformat(text), "D"))
        except ValueError:
            raise UserError(f"{path} line {number}: {text!r} is not a date (expected YYYY-MM-DD)") from None
    return days


def calendar_day_types(days, holidays=()) -> np.ndarray:
    """Calendar codes of ``days`` (a ``DatetimeIndex``): 0 weekday, 1 Saturday, 2 Sunday or one of
    ``holidays`` (datetime64 days), as the CTA's ``W``/``A``/``U``; int64 ``[len(days)]``."""
    codes = np.where(days.dayofweek == 5, 1, np.where(days.dayofweek == 6, 2, 0)).astype(np.int64)
    if len(holidays):
        codes[np.isin(np.asarray(days, dtype="datetime64[D]"), np.array(sorted(holidays), dtype="datetime64[D]"))] = 2
    return codes


def cta_day_types(data_dir: str | None):
    """The CTA file's ``day_type`` codes (``W``/``A``/``U``), as ``read_day_types`` gives them."""
    return read_day_types(cta_csv_path(data_dir), CTA_DATE_COLUMN, CTA_DAY_TYPE_COLUMN, CTA_DATE_FORMAT)


SYNTHETIC_HOLIDAYS = ((1, 1), (7, 4), (12, 25), (12, 31), (5, 27), (9, 2), (11, 28))  # (month, day)


def synthetic_holidays(days) -> set:
    """The days of ``days`` (a ``DatetimeIndex``) on which ``synthetic_series`` dips for a holiday."""
    hit = np.zeros(len(days), dtype=bool)
    for month, day in SYNTHETIC_HOLIDAYS:
        hit |= (days.month == month) & (days.day == day)
    return set(np.asarray(days[hit], dtype="datetime64[D]"))


def synthetic_series(seed: int = 0, start: str = "2014-01-01", end: str = "2019-12-31"):
    """A ridership-like daily series: weekday/weekend levels, yearly cycle, slow trend, holiday
    dips, weather-like autocorrelated noise. Deterministic from ``seed``."""
    import pandas as pd

    days = pd.date_range(start, end, freq="D")
    rng = np.random.default_rng(seed)
    t = np.arange(len(days))
    weekly = np.array([1.0, 1.02, 1.03, 1.02, 0.97, 0.55, 0.42])[days.dayofweek]
    yearly = 1 + 0.08 * np.sin(2 * np.pi * (days.dayofyear - 100) / 365.25)
    trend = 1 - 0.03 * t / 365.25
    holiday = np.where(np.isin(np.asarray(days, dtype="datetime64[D]"), list(synthetic_holidays(days))), 0.45, 1.0)
    noise = np.zeros(len(days))
    shocks = rng.normal(0, 0.025, len(days))
    for i in range(1, len(days)):
        noise[i] = 0.7 * noise[i - 1] + shocks[i]
    values = 520_000 * weekly * yearly * trend * holiday * (1 + noise)
    return pd.Series(np.maximum(values, 0).round(), index=days, name="riders")


def code_windows(codes: np.ndarray, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows of per-day codes aligned with ``windows``: past ``[n, window]`` and future
    ``[n, horizon]``, int64."""
    codes = np.asarray(codes, dtype=np.int64)
    n = max(0, len(codes) - window - horizon + 1)
    idx = np.arange(n)[:, None]
    return codes[idx + np.arange(window)], codes[idx + window + np.arange(horizon)]


def windows(series, window: int, horizon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All windows of a series: inputs float32 ``[n, window, 1]``, targets ``[n, horizon]``, and
    the first target day of each window (datetime64). Empty arrays when the series is too short."""
    values = np.asarray(series, dtype=np.float32)
    n = len(values) - window - horizon + 1
    if n <= 0:
        empty = np.zeros((0, window, 1), np.float32), np.zeros((0, horizon), np.float32)
        return (*empty, np.array([], dtype="datetime64[D]"))
    idx = np.arange(n)[:, None]
    x = values[idx + np.arange(window)][..., None]
    y = values[idx + window + np.arange(horizon)]
    starts = np.asarray(series.index[window : window + n], dtype="datetime64[D]")
    return x, y, starts


if __name__ == "__main__":
    loaded = load_cta(sys.argv[1] if len(sys.argv) > 1 else None)
    print(f"{len(loaded)} days, {loaded.index.min():%Y-%m-%d}..{loaded.index.max():%Y-%m-%d}, mean {loaded.mean():.0f}")
