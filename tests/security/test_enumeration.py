"""No enumeration: known, unknown, rate-limited and repeated addresses answer alike, as fast."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from portal.core.blind_index import KdfParams, blind_index
from tests.security.conftest import (
    KNOWN,
    SLUG,
    Site,
    form_token,
    links_to,
    lookups_answered,
    metric,
    new_client_address,
    wait_until,
)

pytestmark = pytest.mark.e2e

ROUNDS = 30  # lookups per kind in the timing test
GROUPS = ("known", "unknown", "client_limited", "repeated")


class Lookups:
    """One warm connection posting lookups; the client address is chosen per request."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.http = httpx.Client(base_url=site.portal.url, timeout=30)
        self.token = form_token(self.http.get(f"/{SLUG}/").text)

    def post(self, address: str, client: str) -> tuple[httpx.Response, float]:
        """The response and how long it took, once its background work is done."""
        answered = lookups_answered(self.site.portal)
        started = time.perf_counter()
        response = self.http.post(
            f"/{SLUG}/lookup",
            data={"email": address, "csrf_token": self.token},
            headers={"X-Forwarded-For": client},
        )
        elapsed = time.perf_counter() - started
        wait_until(lambda: lookups_answered(self.site.portal) > answered)
        wait_until(lambda: not self.site.mail_pending())
        return response, elapsed

    def exhaust_client(self, client: str) -> None:
        for n in range(4):
            self.post(f"exhaust-{client}-{n}@example.net", client)

    def exhaust_address(self, address: str) -> None:
        for _ in range(3):
            self.post(address, new_client_address())


@pytest.fixture(scope="module")
def lookups(site: Site) -> Iterator[Lookups]:
    lookups = Lookups(site)
    yield lookups
    lookups.http.close()


def kinds(lookups: Lookups, run: str) -> dict[str, Callable[[int], tuple[str, str]]]:
    """Per kind, the (address, client address) of its n-th lookup; limits reached first."""
    limited_client = new_client_address()
    repeated = KNOWN[-1] if run == "timing" else KNOWN[-2]
    lookups.exhaust_client(limited_client)
    lookups.exhaust_address(repeated)
    offset = 0 if run == "timing" else ROUNDS
    return {
        "known": lambda n: (KNOWN[offset + n], new_client_address()),
        "unknown": lambda n: (f"nobody-{run}-{n}@example.net", new_client_address()),
        "client_limited": lambda n: (f"limited-{run}-{n}@example.net", limited_client),
        "repeated": lambda n: (repeated, new_client_address()),
    }


def test_it_gives_every_kind_of_address_the_same_answer(lookups: Lookups, site: Site) -> None:
    made = kinds(lookups, "shape")
    answers, pages = {}, {}
    for kind, make in made.items():
        address, client = make(0)
        answers[kind] = lookups.post(address, client)[0]
        # The page shows the address typed, from the cookie the answer set: that alone differs.
        page = lookups.http.get(answers[kind].headers["location"]).text
        assert f"<strong data-sent-address>{address}</strong>" in page, kind
        pages[kind] = page.replace(address, "ADDRESS")

    shapes = {
        kind: (r.status_code, r.headers.get("location"), sorted(set(r.headers) - {"date"}))
        for kind, r in answers.items()
    }
    assert len(set(map(repr, shapes.values()))) == 1, shapes
    assert {len(r.content) for r in answers.values()} == {0}
    # One length for every address (and these differ in length): sealed and padded.
    assert len({len(r.cookies["portal_sent"]) for r in answers.values()}) == 1
    assert len(set(pages.values())) == 1, "the 'check your inbox' page differs between kinds"


def test_it_sends_nothing_over_a_limit_and_counts_it(lookups: Lookups, site: Site) -> None:
    made = kinds(lookups, "quiet")
    client_before = metric(site.portal, "portal_rate_limited_total", limit="client")
    address_before = metric(site.portal, "portal_rate_limited_total", limit="address")
    outbox = site.outbox_count()

    limited_address, _ = made["client_limited"](1)
    repeated, _ = made["repeated"](1)
    for kind in ("client_limited", "repeated"):
        assert lookups.post(*made[kind](1))[0].status_code == 303

    assert site.outbox_count() == outbox
    assert not links_to(site.smtp, limited_address)
    assert len(links_to(site.smtp, repeated)) == 3
    assert metric(site.portal, "portal_rate_limited_total", limit="client") == client_before + 1
    assert metric(site.portal, "portal_rate_limited_total", limit="address") == address_before + 1


def test_it_answers_every_kind_in_the_same_time(lookups: Lookups, site: Site) -> None:
    """Hashing (argon2id) and sending happen after the response: no kind is slower.

    Every lookup is measured on the same warm connection, on a quiet server (each waits
    until the previous one's background work and mail are done), in rounds of one lookup
    of each kind in a shuffled order, so that a slow spell of the machine hits all kinds.
    If the hash ran before the response, known, unknown and repeated lookups would each
    take one argon2id longer than a client-limited one, which skips hashing.
    """
    made = kinds(lookups, "timing")
    shuffle = random.Random(20240301).shuffle
    times: dict[str, list[float]] = {kind: [] for kind in GROUPS}
    for n in range(ROUNDS):
        order = list(GROUPS)
        shuffle(order)
        for kind in order:
            response, elapsed = lookups.post(*made[kind](n))
            assert response.status_code == 303
            times[kind].append(elapsed)

    one_hash = argon2_seconds()
    report = {k: f"{statistics.median(v) * 1000:.1f} ms" for k, v in times.items()}
    report["argon2id"] = f"{one_hash * 1000:.1f} ms"
    for kind in GROUPS[1:]:
        paired = [a - b for a, b in zip(times[kind], times["known"], strict=True)]
        assert abs(statistics.median(paired)) < one_hash / 2, (kind, report)
        share = slower_share(times[kind], times["known"])
        assert 0.2 < share < 0.8, (kind, f"slower in {share:.0%} of pairs", report)


def argon2_seconds() -> float:
    """The median time of one blind index at the default parameters, on this machine now."""
    samples = []
    for n in range(15):
        started = time.perf_counter()
        blind_index(f"x{n}@example.org", pepper=b"p", salt=b"s" * 16, params=KdfParams())
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def slower_share(a: list[float], b: list[float]) -> float:
    """How often a lookup of `a` was slower than one of `b` (Mann-Whitney U / (n·m)).

    0.5 when both come from the same distribution; near 1 when `a` does more work.
    """
    wins = sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    return wins / (len(a) * len(b))
