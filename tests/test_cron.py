"""Schedules of `scheduled` workloads (gxo.runtime.lifecycles.cron): parsing with croniter,
the compiler's field-by-field diagnosis, and DST-correct fire times through zoneinfo."""

from __future__ import annotations

from datetime import datetime

import pytest
from gxo.runtime.lifecycles import cron
from gxo.runtime.lifecycles.cron import ScheduleError, format_time, parse_schedule, preview, zone_named

BERLIN = zone_named("Europe/Berlin")
UTC = zone_named("UTC")
NEW_YORK = zone_named("America/New_York")


def at(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def fires(expr: str, start: str, n: int, tz=BERLIN) -> list[str]:
    return [format_time(t, tz) for t in parse_schedule(expr).next_times(at(start), n, tz)]


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text", [
    "*/5 * * * *", "30 2 * * *", "0 9 * * MON-FRI", "0 0 1,15 JAN *", "0 0 L * *", "0 0 * * 1#2",
    "0 30 2 * * *", "*/10 * * * * *", "  5 4 * * *  ",
    "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
    "@every 90s", "@every 1h30m", "@every 250ms",
])
def test_valid_schedules(text: str) -> None:
    s = parse_schedule(text)
    assert s.text == text
    assert s.next_after(at("2026-01-01T00:00:00+00:00"), UTC) > at("2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize(("text", "field", "bad"), [
    ("61 * * * *", 0, "61"),
    ("0 24 * * *", 1, "24"),
    ("0 0 32 * *", 2, "32"),
    ("0 0 * 13 *", 3, "13"),
    ("0 0 * foo *", 3, "foo"),
    ("0 0 * * 8", 4, "8"),
    ("*/0 * * * *", 0, "*/0"),
    ("? * * * *", 0, "?"),
    ("60 0 2 * * *", 0, "60"),  # six fields: the seconds come first
    ("0 60 2 * * *", 1, "60"),
    ("  5 99 * * *", 1, "99"),
])
def test_bad_field_is_located(text: str, field: int, bad: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.field == field
    assert text[err.start:err.end] == bad
    assert f"'{bad}'" in err.message


@pytest.mark.parametrize(("text", "words", "bad"), [
    ("* * * *", "got 4", "* * * *"),
    ("1 2 3 4 5 6 7", "got 7", "1 2 3 4 5 6 7"),
    ("@reboot", "unknown schedule alias", "@reboot"),
    ("@daily 5", "unknown schedule alias", "@daily 5"),
    ("@every", "needs a duration", "@every"),
    ("@every 90", "not a duration", "90"),
    ("@every 1m 30s", "not a duration", "1m 30s"),
    ("@every 0s", "positive", "0s"),
    ("0 0 30 2 *", "never fires", "0 0 30 2 *"),
    ("", "empty", ""),
])
def test_bad_schedule_says_what_and_where(text: str, words: str, bad: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    err = info.value
    assert words in err.message
    assert err.field is None
    assert text[err.start:err.end] == bad


def test_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Berln'"):
        zone_named("Europe/Berln")
    with pytest.raises(ValueError):
        zone_named("/etc/passwd")


# --------------------------------------------------------------------------- fire times


def test_five_fields() -> None:
    assert fires("*/15 * * * *", "2026-06-01T10:07:00+02:00", 3) == [
        "2026-06-01T10:15:00+02:00", "2026-06-01T10:30:00+02:00", "2026-06-01T10:45:00+02:00"]
    # strictly after: a time that matches is not its own next fire
    assert fires("30 2 * * *", "2026-06-01T02:30:00+02:00", 1) == ["2026-06-02T02:30:00+02:00"]
    assert fires("0 9 * * MON-FRI", "2026-06-05T12:00:00+02:00", 2) == [  # a Friday
        "2026-06-08T09:00:00+02:00", "2026-06-09T09:00:00+02:00"]


def test_six_fields_have_seconds_first() -> None:
    assert fires("*/20 * * * * *", "2026-06-01T10:00:05+02:00", 3) == [
        "2026-06-01T10:00:20+02:00", "2026-06-01T10:00:40+02:00", "2026-06-01T10:01:00+02:00"]
    assert fires("15 30 2 * * *", "2026-06-01T00:00:00+02:00", 1) == ["2026-06-01T02:30:15+02:00"]


@pytest.mark.parametrize(("alias", "start", "expected"), [
    ("@hourly", "2026-06-01T10:07:00+02:00", "2026-06-01T11:00:00+02:00"),
    ("@daily", "2026-06-01T10:07:00+02:00", "2026-06-02T00:00:00+02:00"),
    ("@midnight", "2026-06-01T10:07:00+02:00", "2026-06-02T00:00:00+02:00"),
    ("@weekly", "2026-06-01T10:07:00+02:00", "2026-06-07T00:00:00+02:00"),  # Sunday
    ("@monthly", "2026-06-01T10:07:00+02:00", "2026-07-01T00:00:00+02:00"),
    ("@yearly", "2026-06-01T10:07:00+02:00", "2027-01-01T00:00:00+01:00"),
    ("@annually", "2026-06-01T10:07:00+02:00", "2027-01-01T00:00:00+01:00"),
])
def test_aliases(alias: str, start: str, expected: str) -> None:
    assert fires(alias, start, 1) == [expected]


def test_every_is_anchored_at_the_previous_fire() -> None:
    s = parse_schedule("@every 90s")
    assert s.every == 90.0
    assert s.next_after(1000.0) == 1090.0
    assert s.next_after(1000.25, BERLIN) == 1090.25  # no rounding, no zone
    assert s.next_times(0.0, 3) == [90.0, 180.0, 270.0]


def test_spring_forward_fixed_time_fires_when_the_gap_ends() -> None:
    # Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that night
    assert fires("30 2 * * *", "2026-03-28T12:00:00+01:00", 3) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
    # several skipped times fire once, at the end of the gap
    assert fires("0,20,40 2 * * *", "2026-03-29T01:50:00+01:00", 2) == [
        "2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]
    assert fires("0 30 2 * * *", "2026-03-28T12:00:00+01:00", 1) == ["2026-03-29T03:00:00+02:00"]


def test_spring_forward_wildcard_follows_the_clock() -> None:
    assert fires("*/30 * * * *", "2026-03-29T01:10:00+01:00", 3) == [
        "2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00"]
    assert fires("@hourly", "2026-03-29T00:30:00+01:00", 3) == [
        "2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]


def test_fall_back_fixed_time_fires_once() -> None:
    # Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:30 happens twice, fires the first time
    assert fires("30 2 * * *", "2026-10-24T12:00:00+02:00", 2) == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
    # asked during the second pass, it does not fire again
    assert fires("30 2 * * *", "2026-10-25T02:10:00+01:00", 1) == ["2026-10-26T02:30:00+01:00"]


def test_fall_back_wildcard_fires_on_each_pass() -> None:
    assert fires("0 * * * *", "2026-10-25T01:10:00+02:00", 3) == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]
    assert fires("*/20 2 * * *", "2026-10-25T02:30:00+02:00", 4) == [
        "2026-10-25T02:40:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:20:00+01:00",
        "2026-10-25T02:40:00+01:00"]


def test_fire_times_increase_across_both_changes_of_two_zones() -> None:
    """Over the weeks around the 2026 changes of Berlin (Mar 29, Oct 25) and New York (Mar 8,
    Nov 1), every fire time is later than the one before, and a fixed-time job fires once a day."""
    windows = (("2026-03-01T00:00:00+00:00", "2026-04-03T00:00:00+00:00"),
               ("2026-10-20T00:00:00+00:00", "2026-11-04T00:00:00+00:00"))
    for expr in ("*/30 * * * *", "30 2 * * *", "0 1-3 * * *", "@hourly"):
        s = parse_schedule(expr)
        for tz in (BERLIN, NEW_YORK):
            for start, end in windows:
                t, days = at(start), []
                while t < at(end):
                    nxt = s.next_after(t, tz)
                    assert nxt > t
                    t = nxt
                    days.append(datetime.fromtimestamp(t, tz).date())
                if expr == "30 2 * * *":
                    assert len(days) == len(set(days))


def test_timezone_changes_the_instant() -> None:
    t = at("2026-06-01T00:00:00+00:00")
    s = parse_schedule("0 2 * * *")
    assert format_time(s.next_after(t, UTC), UTC) == "2026-06-01T02:00:00+00:00"
    assert format_time(s.next_after(t, NEW_YORK), NEW_YORK) == "2026-06-01T02:00:00-04:00"


def test_no_zone_is_the_machine_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    monkeypatch.setattr(cron, "_LOCAL", [])
    s = parse_schedule("0 9 * * *")
    assert format_time(s.next_after(at("2026-05-31T12:00:00+00:00"))) == "2026-06-01T09:00:00+09:00"


def test_preview() -> None:
    assert preview("0 2 * * *", "Europe/Berlin", at("2026-12-06T08:00:00+01:00")) == [
        "2026-12-07T02:00:00+01:00", "2026-12-08T02:00:00+01:00", "2026-12-09T02:00:00+01:00"]
    assert preview("@every 1h", "UTC", at("2026-12-06T08:00:00+00:00"), 2) == [
        "2026-12-06T09:00:00+00:00", "2026-12-06T10:00:00+00:00"]
