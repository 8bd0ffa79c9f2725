"""The operator's Markdown in an email: real plain text, safe HTML, no second portal link."""

from __future__ import annotations

import pytest

from portal.mail.markdown import MailMarkdown, site

PORTAL = "https://lek.example.org"
markdown = MailMarkdown(PORTAL)


def test_it_joins_a_hard_wrapped_paragraph_and_drops_the_marks() -> None:
    text = "We found **a leak** in\n*our* ticket `system`.\n\nWe closed it.\n"
    assert markdown.text(text) == "We found a leak in our ticket system.\n\nWe closed it."


def test_it_keeps_a_hard_line_break() -> None:
    assert markdown.text("TicketDienst B.V.  \nPostbus 1\\\nAmsterdam") == (
        "TicketDienst B.V.\nPostbus 1\nAmsterdam"
    )


def test_it_puts_list_items_on_lines_of_their_own() -> None:
    text = "What we did:\n\n- closed the\n  access\n- told the police\n  1. on Monday\n  2. again\n"
    assert markdown.text(text) == (
        "What we did:\n\n- closed the access\n- told the police\n  1. on Monday\n  2. again"
    )


def test_it_keeps_a_loose_list_loose_and_numbers_from_its_start() -> None:
    assert markdown.text("3. one\n\n4. two\n") == "3. one\n\n4. two"


def test_it_writes_headings_quotes_code_and_rules_as_text() -> None:
    text = "# What happened\n\n> a quote\n> on two lines\n\n    code\n\n---\n"
    assert markdown.text(text) == "What happened\n\n> a quote on two lines\n\n    code\n\n* * *"


@pytest.mark.parametrize(
    ("written", "text", "html"),
    [
        (
            "[our statement](https://shop.example/news)",
            "our statement (https://shop.example/news)",
            '<a href="https://shop.example/news" rel="noopener noreferrer">our statement</a>',
        ),
        ("<https://shop.example/>", "https://shop.example/", 'href="https://shop.example/"'),
        ("<privacy@shop.example>", "privacy@shop.example", 'href="mailto:privacy@shop.example"'),
        ("[the FAQ](https://lek.example.org/t/#faq)", "the FAQ", "the FAQ"),
        ("[home](https://LEK.example.org)", "home", "home"),
        ("see https://lek.example.org/t/", "see lek.example.org/t/", "see lek.example.org/t/"),
        ("<https://lek.example.org/t/>", "lek.example.org/t/", "lek.example.org/t/"),
        ("[the FAQ](/t/#faq)", "the FAQ", "the FAQ"),
        ("[files](ftp://shop.example/f)", "files", "files"),
        ("![a *logo*](https://shop.example/logo.png)", "a logo", "a logo"),
    ],
)
def test_it_links_elsewhere_but_never_a_second_time_into_the_portal(
    written: str, text: str, html: str
) -> None:
    assert markdown.text(written) == text
    rendered = markdown.html(written)
    assert html in rendered
    assert 'href="https://lek' not in rendered.lower() and "<img" not in rendered


def test_it_puts_the_texts_headings_below_the_emails_own() -> None:
    assert markdown.html("## What\n\n### Then") == "<h3>What</h3>\n<h4>Then</h4>\n"
    assert markdown.html("# A\n\n## B") == "<h3>A</h3>\n<h4>B</h4>\n"


def test_it_leaves_no_html_of_the_operator() -> None:
    rendered = markdown.html('We found a <script>alert(1)</script> <b onclick="x">leak</b>.')
    assert "<script" not in rendered and "<b" not in rendered and "&lt;script&gt;" in rendered
    assert markdown.text("a <b>leak</b>") == "a <b>leak</b>"  # as written: plain text


def test_it_names_a_site_without_its_scheme() -> None:
    assert site("https://lek.example.org/ticketing-2021/") == "lek.example.org/ticketing-2021/"
    assert site("http://127.0.0.1:8000") == "127.0.0.1:8000"
