"""The operator's Markdown in an email: sanitised HTML for one part, plain text for the other.

An email carries exactly one link into the portal, the one the portal puts there; so a
link into the portal in the operator's text keeps only its words, and a portal address
written out loses its scheme (`lek.example.org/...`). Links to other sites stay.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markdown_it.tree import SyntaxTreeNode
from markupsafe import Markup

_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False})
# The schemes a link in an email may keep; anything else (a relative path, which has no
# base in a mail client, or javascript:) keeps only its words.
_KEPT_SCHEMES = ("http", "https", "mailto")
_BLOCK_SEPARATOR = "\n\n"


def site(url: str) -> str:
    """A URL without its scheme, as a place to type rather than a link to click:
    "https://lek.example.org/x/" -> "lek.example.org/x/"."""
    return url.split("://", 1)[1] if "://" in url else url


class MailMarkdown:
    """Renders the operator's Markdown for an email sent from the portal at `portal_url`."""

    def __init__(self, portal_url: str, *, heading_below: int = 2) -> None:
        self.portal_url = portal_url.rstrip("/")
        self._written_out = re.compile(r"https?://" + re.escape(site(self.portal_url)), re.I)
        self.heading_below = heading_below  # the level of the email's heading above the text

    def html(self, text: str) -> Markup:
        """Sanitised HTML; the text's headings go below the email's own: its highest one
        (whether written `#` or `##`) becomes an h3 under the email's h2, and so on."""
        tokens = _markdown.parse(text)
        levels = [int(t.tag[1]) for t in tokens if t.type == "heading_open"]
        shift = self.heading_below + 1 - min(levels, default=1)
        for token in tokens:
            if token.type in ("heading_open", "heading_close"):
                token.tag = f"h{min(6, int(token.tag[1]) + shift)}"
            elif token.type == "inline" and token.children:
                token.children = self._unlinked(token.children)
        rendered = _markdown.renderer.render(tokens, _markdown.options, {})
        return Markup(nh3.clean(rendered, link_rel="noopener noreferrer"))  # noqa: S704

    def text(self, text: str) -> str:
        """Plain text: no Markdown marks, each paragraph on one line (the mail client wraps
        it to its window), list items on lines of their own, blocks a blank line apart."""
        tree = SyntaxTreeNode(_markdown.parse(text))
        return _BLOCK_SEPARATOR.join(self._blocks(tree))

    def keeps_link(self, href: str) -> bool:
        """A link the email may carry: absolute, to a site other than the portal."""
        inside = href.lower().rstrip("/") == self.portal_url.lower() or href.lower().startswith(
            self.portal_url.lower() + "/"
        )
        return urlsplit(href).scheme.lower() in _KEPT_SCHEMES and not inside

    def _written(self, text: str) -> str:
        return self._written_out.sub(site(self.portal_url), text)

    def _unlinked(self, children: list[Token]) -> list[Token]:
        """The inline tokens without the links that the email may not carry, or images."""
        kept: list[Token] = []
        dropping = False  # links do not nest
        for token in children:
            if token.type == "link_open":
                dropping = not self.keeps_link(str(token.attrs.get("href", "")))
                if dropping:
                    continue
            elif token.type == "link_close" and dropping:
                dropping = False
                continue
            elif token.type == "text":
                token.content = self._written(token.content)
            elif token.type == "image":  # an email loads nothing from elsewhere: its words
                words = "".join(c.content for c in token.children or [] if c.type == "text")
                token = Token("text", "", 0, content=self._written(words))
            kept.append(token)
        return kept

    # -- plain text ---------------------------------------------------------------------

    def _blocks(self, node: SyntaxTreeNode) -> list[str]:
        return [block for child in node.children for block in self._block(child)]

    def _block(self, node: SyntaxTreeNode) -> list[str]:
        if node.type in ("paragraph", "heading"):
            return [self._inline(node)]
        if node.type in ("bullet_list", "ordered_list"):
            return [self._list(node)]
        if node.type == "blockquote":
            quoted = _BLOCK_SEPARATOR.join(self._blocks(node)).splitlines()
            return ["\n".join(f"> {line}".rstrip() for line in quoted)]
        if node.type in ("code_block", "fence"):
            lines = node.content.rstrip("\n").splitlines()
            return ["\n".join(f"    {line}".rstrip() for line in lines)]
        if node.type == "hr":
            return ["* * *"]
        return self._blocks(node)

    def _list(self, node: SyntaxTreeNode) -> str:
        paragraphs = [p for item in node.children for p in item.children if p.type == "paragraph"]
        tight = all(p.hidden for p in paragraphs)
        joint = "\n" if tight else _BLOCK_SEPARATOR
        start = int(node.attrs.get("start", 1)) if node.type == "ordered_list" else 0
        items = []
        for number, item in enumerate(node.children, start):
            marker = f"{number}. " if node.type == "ordered_list" else "- "
            first, *rest = joint.join(self._blocks(item)).splitlines() or [""]
            indent = " " * len(marker)
            items.append("\n".join([marker + first, *(indent + x if x else x for x in rest)]))
        return joint.join(items)

    def _inline(self, node: SyntaxTreeNode) -> str:
        return "".join(self._span(child) for child in node.children)

    def _span(self, node: SyntaxTreeNode) -> str:
        if node.type == "text":
            return self._written(node.content)
        if node.type == "softbreak":
            return " "  # a hard-wrapped line of the incident file joins its paragraph
        if node.type == "hardbreak":
            return "\n"
        if node.type == "code_inline":
            return node.content
        if node.type == "link":
            return self._link(self._inline(node), str(node.attrs.get("href", "")))
        return self._inline(node)  # inline, em, strong, image (its alt text): the words

    def _link(self, words: str, href: str) -> str:
        if not self.keeps_link(href):
            return words
        shown = href.removeprefix("mailto:")
        return shown if words in (href, shown) else f"{words} ({shown})"
