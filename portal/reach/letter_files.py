"""What `portal letters` writes for a mailing house: letters.csv and letters.pdf.

The merge file has one row per letter: `code`, `lang`, and the postal columns the partner's
file has; every cell formula-neutralised. The PDF (fpdf2: placed in millimetres, no system
libraries) has one A4 page per letter, the address block inside the window that
PORTAL_LETTER_WINDOW gives (DIN 5008 form B by default), then the letter in its language
from `templates/letters/letter.{lang}.txt`. Both files are written readable by their owner
alone, whole or not at all: they hold postal addresses, which the portal itself never keeps.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portal.core.clock import utcnow
from portal.core.config import Settings
from portal.core.errors import PortalError
from portal.core.files import neutralise, write_private
from portal.core.i18n import format_date
from portal.core.printable import shown
from portal.incidents.stored import Incident
from portal.mail.markdown import MailMarkdown
from portal.mail.renderer import Renderer
from portal.reach.letter_rows import POSTAL
from portal.reach.letters import Letter, LettersSummary

if TYPE_CHECKING:
    from fpdf import FPDF

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")  # Debian's fonts-dejavu-core
FONT, BOLD = FONT_DIR / "DejaVuSans.ttf", FONT_DIR / "DejaVuSans-Bold.ttf"
MARGIN = 20.0  # mm, left and right, as DIN 5008
SENDER_LINE = 5.0  # mm below the window's top: the return address, small
ADDRESS_FROM = 17.7  # mm below the window's top: DIN 5008's address zone


def merge_file(letters: Iterable[Letter], postal_fields: list[str]) -> bytes:
    """letters.csv: UTF-8, one row per letter, cells a spreadsheet will not run."""
    columns = ["code", "lang", *[f for f in POSTAL if f in postal_fields]]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for letter in letters:
        values = {"code": letter.code, "lang": letter.lang, **letter.postal}
        writer.writerow([neutralise(values.get(column, "")) for column in columns])
    return out.getvalue().encode("utf-8")


@dataclass(frozen=True)
class LetterContext:
    """What every letter of a run shares."""

    incident: Incident
    settings: Settings
    renderer: Renderer

    def text(self, letter: Letter) -> str:
        incident, lang = self.incident, letter.lang
        template = self.renderer.emails.get_template(f"letters/letter.{lang}.txt")
        return template.render(
            kind=letter.kind,
            place_date=format_date(utcnow().date(), lang),
            title=incident.text(incident.title, lang),
            name=letter.postal.get("name"),
            notice=MailMarkdown(self.settings.base_url).text(incident.text(incident.notice, lang)),
            partners=", ".join(p.name for p in letter.partners),
            fields=letter.fields,
            code=letter.code,
            code_url=f"{self.settings.base_url.rstrip('/')}/{incident.slug}/code",
            contact=incident.contact_email,
            website=incident.website,
            organisation=incident.organisation or "",
        )


def letters_pdf(letters: Iterable[Letter], context: LetterContext) -> bytes:
    """letters.pdf: one A4 page per letter, the address where the envelope's window is."""
    # Imported here: fpdf2 (with fontTools) takes 0.4 s to import, and every `portal`
    # command would pay it; only `portal letters --pdf` needs it.
    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=True, margin=20)
    pdf.set_margins(MARGIN, 20, MARGIN)
    pdf.add_font("body", "", str(FONT))
    pdf.add_font("body", "B", str(BOLD))
    pdf.set_title(context.incident.text(context.incident.title, context.incident.languages[0]))
    for letter in letters:
        pdf.add_page()
        _address_block(pdf, letter, context)
        text, start = context.text(letter), pdf.get_y()
        # One page per letter: the largest type (down to 7 pt) with which the text fits.
        size = next((s for s in SIZES if _fits(pdf, text, s, start)), SIZES[-1])
        pdf.set_y(start)
        _body(pdf, text, size)
    return bytes(pdf.output())


SIZES = (10.0, 9.5, 9.0, 8.5, 8.0, 7.5, 7.0)


def _fits(pdf: FPDF, text: str, size: float, start: float) -> bool:
    with pdf.offset_rendering() as dummy:
        dummy.set_y(start)
        _body(dummy, text, size)
    return not dummy.page_break_triggered


def _address_block(pdf: FPDF, letter: Letter, context: LetterContext) -> None:
    left, top, width, height = context.settings.letter_window
    sender = context.incident.organisation or context.incident.contact_email
    pdf.set_font("body", "", 7)
    pdf.set_xy(left + 5, top + SENDER_LINE)
    pdf.cell(width - 10, 3, sender[:80])
    pdf.set_font("body", "", 10)
    lines = _address_lines(letter)
    line = min(4.5, (height - ADDRESS_FROM - 2) / max(len(lines), 1))
    pdf.set_xy(left + 5, top + ADDRESS_FROM)
    for text in lines:
        pdf.set_x(left + 5)
        pdf.cell(width - 10, line, text, new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(top + height + 10)


def _address_lines(letter: Letter) -> list[str]:
    postal = letter.postal
    town = " ".join(v for v in (postal.get("postcode"), postal.get("city")) if v)
    lines = [postal.get("name", ""), postal.get("address", ""), town, postal.get("country", "")]
    return [line for line in lines if line]


def _body(pdf: Any, text: str, size: float) -> None:
    """The letter's text from the current line: `# ` starts a heading, `- ` an item."""
    width, line = pdf.w - 2 * MARGIN, size * 0.45
    for block in text.split("\n\n"):
        block = block.strip("\n")
        if not block:
            continue
        if block.startswith("# "):
            pdf.set_font("body", "B", size + 1)
            heading, _, rest = block[2:].partition("\n")
            pdf.multi_cell(width, line + 0.5, heading, new_x="LMARGIN", new_y="NEXT")
            block = rest
        pdf.set_font("body", "B" if _is_code(block) else "", 14 if _is_code(block) else size)
        for row in block.splitlines():
            pdf.multi_cell(
                width,
                line,
                row.replace("- ", "• ", 1) if row.startswith("- ") else row,
                new_x="LMARGIN",
                new_y="NEXT",
            )
        pdf.ln(line * 0.6)


def _is_code(block: str) -> bool:
    return len(block) == 25 and block.count("-") == 4


NAMES = ("letters.pdf", "letters.csv")  # put in place in this order: letters.csv last
NOTE = "letters.unfinished"  # a run's note while its letters are aside: no personal data
ASIDE = ".pending"  # the letters' names while the codes are being committed


@dataclass
class LetterFiles:
    """A run's letters in `out`: written aside (`letters.csv.pending`) with a note of the
    run (`letters.unfinished`: incident, partner and the run's stamp), put in place once
    the codes are committed, the note dropped last but one step.

    The note says a run recorded (or may have recorded) codes whose letters are not in
    place. A later run for the same incident and partner into the same `out` resumes it:
    the people that run recorded get their letter again (portal.reach.letters). A note
    beside a letters.csv is a finished run's (letters.csv is put in place last and no run
    starts beside one) and is dropped.
    """

    out: Path
    context: LetterContext | None = None  # --pdf
    written: list[Path] = field(default_factory=list)
    _aside: list[tuple[Path, Path]] = field(default_factory=list)

    def __post_init__(self) -> None:
        note, pdf_file, csv_file = (self.out / name for name in (NOTE, *NAMES))
        aside = self.out / ("letters.csv" + ASIDE)
        if note.exists() and pdf_file.exists() and aside.exists() and not csv_file.exists():
            os.replace(aside, csv_file)  # a run stopped between its two files: all committed
        if csv_file.exists():
            note.unlink(missing_ok=True)
        refuse_to_overwrite(self.out)

    def interrupted(self, incident: str, partner: str) -> datetime | None:
        note = self.out / NOTE
        if not note.exists():
            return None
        try:
            held = json.loads(note.read_text(encoding="utf-8"))
            run, stamp = (held["incident"], held["partner"]), datetime.fromisoformat(held["stamp"])
        except (OSError, ValueError, KeyError, TypeError):
            raise PortalError(f"{shown(str(note))} cannot be read: {UNREADABLE}") from None
        if run != (incident, partner):
            raise PortalError(
                f"{shown(str(self.out))} holds an interrupted run of `portal letters "
                f"{shown(run[0])} {shown(run[1])}`: run that again with this --out first "
                "(its letters are not in place yet), or choose another --out"
            )
        return stamp

    def prepare(
        self, summary: LettersSummary, *, incident: str, partner: str, stamp: datetime
    ) -> None:
        if self.out.is_dir():  # an interrupted run's letters: made again, or none now
            for name in NAMES:
                (self.out / (name + ASIDE)).unlink(missing_ok=True)
        if not summary.letters:
            return
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PortalError(f"cannot make {shown(str(self.out))}: {exc.strerror}") from None
        note = {"incident": incident, "partner": partner, "stamp": stamp.isoformat()}
        write_private(self.out / NOTE, json.dumps(note).encode())
        made = {"letters.csv": merge_file(summary.letters, summary.postal_fields)}
        if self.context is not None:
            made["letters.pdf"] = letters_pdf(summary.letters, self.context)
        for name in NAMES:
            if name in made:
                write_private(self.out / (name + ASIDE), made[name])
                self._aside.append((self.out / (name + ASIDE), self.out / name))

    def finish(self) -> None:
        for aside, path in self._aside:
            try:
                os.replace(aside, path)
            except OSError as exc:
                raise PortalError(f"cannot write {shown(str(path))}: {exc.strerror}") from None
            self.written.append(path)
        (self.out / NOTE).unlink(missing_ok=True)


UNREADABLE = "it notes an interrupted run of portal letters; if you are sure none was, delete it"


def refuse_to_overwrite(out: Path) -> None:
    """Stops before anything is made when `out` holds the letters of an earlier run: they
    would be lost, and the people in them never written to."""
    for name in ("letters.csv", "letters.pdf"):
        if (out / name).exists():
            raise PortalError(
                f"{shown(str(out / name))} exists (an earlier run's letters): send them and "
                "move them away, or choose another --out"
            )


def write_letters(
    out: Path, letters: list[Letter], postal_fields: list[str], context: LetterContext | None
) -> list[Path]:
    """Writes letters.csv (and letters.pdf when `context` is given) into `out`; nothing
    when there are no letters."""
    if not letters:
        return []
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PortalError(f"cannot make {shown(str(out))}: {exc.strerror}") from None
    written = [out / "letters.csv"]
    write_private(written[0], merge_file(letters, postal_fields))
    if context is not None:
        written.append(out / "letters.pdf")
        write_private(written[1], letters_pdf(letters, context))
    return written
