"""The hourly counters behind the overview: sums and highs per hour, safe with many writers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from portal.store import db, hourly

NOON = datetime(2026, 2, 22, 12, 0)


def series(engine: Engine, *names: str, hours: int = 3) -> dict[str, list[int]]:
    with engine.connect() as conn:
        return hourly.series(conn, names, hours=hours, until=NOON + timedelta(minutes=59))


def test_it_sums_a_figure_per_hour(engine: Engine) -> None:
    with engine.begin() as conn:
        hourly.bump(conn, hourly.LOOKUPS, by=3, at=NOON - timedelta(minutes=1))
        hourly.bump_many(conn, {hourly.LOOKUPS: 2, hourly.LINK_MAILS: 1}, at=NOON)
        hourly.bump(conn, hourly.LOOKUPS, at=NOON + timedelta(minutes=59, seconds=59))

    assert series(engine, hourly.LOOKUPS, hourly.LINK_MAILS) == {
        hourly.LOOKUPS: [0, 3, 3],  # 10:00, 11:00 (11:59), 12:00 (12:00 and 12:59:59)
        hourly.LINK_MAILS: [0, 0, 1],
    }
    with engine.connect() as conn:
        assert hourly.total(conn, hourly.LOOKUPS, since=NOON) == 3
        assert hourly.total(conn, hourly.LOOKUPS, since=NOON - timedelta(hours=5)) == 6


def test_it_keeps_the_highest_sample_of_each_hour(engine: Engine) -> None:
    for minute, depth in ((0, 5), (20, 9), (40, 2)):
        with engine.begin() as conn:
            hourly.record_max(conn, hourly.OUTBOX_DEPTH, depth, at=NOON + timedelta(minutes=minute))
    with engine.begin() as conn:
        hourly.record_max(conn, hourly.OUTBOX_DEPTH, 4, at=NOON - timedelta(hours=1))

    assert series(engine, hourly.OUTBOX_DEPTH)[hourly.OUTBOX_DEPTH] == [0, 4, 9]


def test_it_counts_every_bump_of_many_writers_at_once(engine: Engine) -> None:
    def bump_ten(_: int) -> None:
        for _n in range(10):
            with engine.begin() as conn:
                hourly.bump_many(conn, {hourly.LOOKUPS: 2, hourly.MAIL_FAILED: 1}, at=NOON)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(bump_ten, range(4)))

    counted = series(engine, hourly.LOOKUPS, hourly.MAIL_FAILED, hours=1)
    assert counted == {hourly.LOOKUPS: [80], hourly.MAIL_FAILED: [40]}


def test_it_keeps_a_tally_the_database_did_not_take_for_the_next_flush(
    engine: Engine, tmp_path: Path
) -> None:
    tally = hourly.Tally(hourly.LOOKUPS_SHED)
    tally.add(2, at=NOON)
    tally.add(at=NOON + timedelta(minutes=5))
    unreachable = db.make_engine(f"sqlite:///{tmp_path}")  # a folder: no database answers
    try:
        tally.flush(unreachable)
    finally:
        unreachable.dispose()
    assert series(engine, hourly.LOOKUPS_SHED, hours=1)[hourly.LOOKUPS_SHED] == [0]

    tally.add(at=NOON + timedelta(minutes=10))
    tally.flush(engine)
    tally.flush(engine)  # nothing new: nothing written twice

    assert series(engine, hourly.LOOKUPS_SHED, hours=1)[hourly.LOOKUPS_SHED] == [4]
