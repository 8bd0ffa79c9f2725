"""The overview's bar charts: SVG markup from hours and counts, readable without colour."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from portal.web.charts import HEIGHT, hourly_bars, nice_ceiling

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
START = datetime(2026, 2, 21, 13, 0)
HOURS = [START + timedelta(hours=n) for n in range(48)]


def chart(values: list[int], **texts: str) -> ET.Element:
    markup = hourly_bars(
        HOURS,
        values,
        key=texts.get("key", "lookups"),
        title=texts.get("title", "Lookups answered"),
        label=texts.get("label", "Lookups answered. 10 in the last 48 hours."),
    )
    return ET.fromstring(str(markup).replace("<svg ", f'<svg xmlns="{SVG[1:-1]}" ', 1))


def bars(svg: ET.Element) -> list[ET.Element]:
    return [e for e in svg.iter(f"{SVG}rect") if e.get("class") == "chart-bar"]


def texts(svg: ET.Element, cls: str = "chart-label") -> list[str]:
    return [e.text or "" for e in svg.iter(f"{SVG}text") if cls in (e.get("class") or "")]


def test_it_draws_one_bar_per_hour_with_a_count_and_heights_in_proportion() -> None:
    values = [0] * 48
    values[10], values[20], values[47] = 5, 10, 1
    svg = chart(values)

    drawn = bars(svg)
    assert len(drawn) == 3  # an hour with nothing has no bar
    heights = [float(b.get("height", 0)) for b in drawn]
    assert heights[1] == pytest.approx(2 * heights[0], rel=0.01)
    xs = [float(b.get("x", 0)) for b in drawn]
    assert xs == sorted(xs) and xs[2] > xs[1] > xs[0]
    assert texts(svg, "chart-peak") == ["10"]  # the highest bar carries its figure


def test_it_labels_both_axes_and_names_itself_for_screen_readers() -> None:
    svg = chart([3] * 48, title="Link emails sent", label="Link emails sent. 144 in total.")

    assert svg.get("role") == "img"
    assert svg.get("aria-label") == "Link emails sent. 144 in total."
    assert svg.findtext(f"{SVG}title") == "Link emails sent"
    labels = texts(svg)
    assert {"0", "5"} <= set(labels)  # the value axis: 0 and a round top above 3
    assert "18:00" in labels and "00:00" in labels  # the hours, every six
    assert "2026-02-22" in labels and "2026-02-23" in labels  # the date at midnight


def test_it_reads_without_colour_hatched_and_outlined() -> None:
    svg = chart([1, 2] * 24, key="notices_sent")

    pattern = svg.find(f"{SVG}defs/{SVG}pattern")
    assert pattern is not None and pattern.get("id") == "hatch-notices_sent"
    assert all(b.get("fill") == "url(#hatch-notices_sent)" for b in bars(svg))
    # The outline and the hatching come from static/portal.css, not from colour alone.
    css = (ROOT / "static" / "portal.css").read_text(encoding="utf-8")
    assert re.search(r"\.chart-bar \{[^}]*stroke:", css)
    assert re.search(r"\.chart-hatch \{[^}]*stroke:", css)


def test_it_needs_no_script_and_no_style_attribute() -> None:
    markup = str(hourly_bars(HOURS, list(range(48)), key="k", title="t", label="l"))

    assert "<script" not in markup and "style=" not in markup and "on" + "load" not in markup
    assert "http" not in markup.replace("http://www.w3.org", "")


def test_it_escapes_every_text_it_is_given() -> None:
    markup = str(
        hourly_bars(HOURS, [1] * 48, key='a"b', title="<b>x</b> & y", label='say "hi" <now>')
    )

    assert "<b>" not in markup and "&lt;b&gt;x&lt;/b&gt; &amp; y" in markup
    assert 'aria-label="say &#34;hi&#34; &lt;now&gt;"' in markup
    assert 'id="hatch-a&#34;b"' in markup


def test_it_draws_an_empty_day_without_dividing_by_zero() -> None:
    svg = chart([0] * 48)

    assert bars(svg) == []
    assert texts(svg)[:2] == ["0", "1"]
    assert float(svg.get("viewBox", "").split()[3]) == HEIGHT


def test_it_refuses_hours_and_values_that_do_not_pair() -> None:
    with pytest.raises(ValueError):
        hourly_bars(HOURS, [1, 2], key="k", title="t", label="l")


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (10, 10), (11, 20), (4_999, 5_000)]
)
def test_it_rounds_the_axis_up_to_a_round_figure(value: int, ceiling: int) -> None:
    assert nice_ceiling(value) == ceiling
