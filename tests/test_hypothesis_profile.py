"""The property tests run repeatably: the same examples every run, none kept for the next."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

pytestmark = pytest.mark.skipif(
    os.environ.get("HYPOTHESIS_PROFILE", "ci") != "ci", reason="another profile was chosen"
)


def examples_tried() -> list[str]:
    tried: list[str] = []

    @given(st.text())
    def record(value: str) -> None:
        tried.append(value)

    record()
    return tried


def test_it_tries_the_same_examples_on_every_run() -> None:
    first, second = examples_tried(), examples_tried()

    assert len(first) > 10
    assert first == second


def test_it_keeps_no_example_database_and_ignores_timing() -> None:
    # A failing example stored in .hypothesis/ once failed every later run in that checkout.
    assert hypothesis_settings.default.database is None
    assert hypothesis_settings.default.deadline is None
    assert hypothesis_settings.default.print_blob
