"""HTML documents from the Jinja2 templates, and the same HTML laid out as PDF.

Why one source for both: the templates (`templates/<lang>/*.html.j2`) are what an
establishment edits (its letterhead, its wording); the PDF is made from the HTML they
produce, so the printed letter and the e-mailed one say the same thing. The HTML stays
within a small subset (headings, paragraphs, lists, tables, bold/italic, line breaks)
that `html_to_pdf` lays out with ReportLab's platypus: a pure-Python library from PyPI
that needs no system library (WeasyPrint would need Pango and Cairo) and lays out about
a hundred letters a second per core. Text uses the PDF base fonts (Helvetica, WinAnsi
encoding: all of French), or a TrueType font given in the settings for other scripts;
with the base fonts, characters outside WinAnsi are transliterated.
"""

from __future__ import annotations

import html
import io
import unicodedata
from collections.abc import Callable, Iterable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import jinja2
from reportlab.lib import colors
from reportlab.lib.enums import TA_LEFT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, StyleSheet1, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.platypus import (
    Flowable,
    HRFlowable,
    KeepTogether,
    ListFlowable,
    ListItem,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from sentinelle.errors import ConfigError
from sentinelle.incident.texts import CATEGORY_LABELS, CATEGORY_SHORT, check_lang, fmt_datetime, fmt_int

__all__ = ["TEMPLATES", "PdfStyle", "environment", "html_to_pdf", "merge_pdfs", "render_html"]

#: The templates shipped with Sentinelle.
TEMPLATES = Path(__file__).parent / "templates"


def environment(extra: str | Path | None = None, tz: str = "Europe/Paris") -> jinja2.Environment:
    """The Jinja2 environment: an establishment's own templates folder first (when given), then ours.

    Filters: `num(lang)`, `dt(lang)`, `date(lang)`, `cat(lang)` (plain-language category),
    `catshort(lang)`.
    """
    paths = [str(extra)] if extra else []
    paths.append(str(TEMPLATES))
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(paths), autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, lang="fr": fmt_int(v, lang)
    env.filters["dt"] = lambda v, lang="fr": fmt_datetime(v, lang, tz)
    env.filters["date"] = lambda v, lang="fr": fmt_datetime(v, lang, tz, date_only=True)
    env.filters["cat"] = lambda v, lang="fr": CATEGORY_LABELS.get(v, {}).get(lang, v)
    env.filters["catshort"] = lambda v, lang="fr": CATEGORY_SHORT.get(v, {}).get(lang, v)
    return env


_ENV: dict[tuple[str, str], jinja2.Environment] = {}


def render_html(name: str, lang: str, context: dict[str, Any], templates: str | Path | None = None,
                tz: str = "Europe/Paris") -> str:
    """Render `templates/<lang>/<name>.html.j2` with `context` (plus `lang`)."""
    check_lang(lang)
    key = (str(templates or ""), tz)
    env = _ENV.get(key)
    if env is None:
        env = _ENV[key] = environment(templates, tz)
    try:
        tpl = env.get_template(f"{lang}/{name}.html.j2")
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"template {lang}/{name}.html.j2 not found in {templates or TEMPLATES}") from exc
    return tpl.render(lang=lang, **context)


# ---- PDF -------------------------------------------------------------------------------------
class PdfStyle:
    """Fonts and paragraph styles of the PDFs; a TrueType font replaces Helvetica when given."""

    def __init__(self, font: str | Path | None = None, bold: str | Path | None = None) -> None:
        base, bold_name = "Helvetica", "Helvetica-Bold"
        self.unicode = False
        if font:
            try:
                pdfmetrics.registerFont(TTFont("SentinelleText", str(font)))
                pdfmetrics.registerFont(TTFont("SentinelleBold", str(bold or font)))
            except Exception as exc:
                raise ConfigError(f"{font}: cannot load this TrueType font ({exc})") from exc
            pdfmetrics.registerFontFamily("SentinelleText", normal="SentinelleText", bold="SentinelleBold",
                                          italic="SentinelleText", boldItalic="SentinelleBold")
            base, bold_name = "SentinelleText", "SentinelleBold"
            self.unicode = True
        ss: StyleSheet1 = getSampleStyleSheet()
        self.body = ParagraphStyle("body", parent=ss["BodyText"], fontName=base, fontSize=9.5, leading=12.5,
                                   alignment=TA_LEFT, spaceAfter=4)
        self.small = ParagraphStyle("small", parent=self.body, fontSize=7.5, leading=9.5)
        self.cell = ParagraphStyle("cell", parent=self.body, fontSize=8, leading=10, spaceAfter=0)
        self.head = ParagraphStyle("headcell", parent=self.cell, fontName=bold_name)
        self.h = {
            1: ParagraphStyle("h1", parent=ss["Heading1"], fontName=bold_name, fontSize=15, leading=18,
                              spaceAfter=6),
            2: ParagraphStyle("h2", parent=ss["Heading2"], fontName=bold_name, fontSize=12, leading=15,
                              spaceBefore=8, spaceAfter=4),
            3: ParagraphStyle("h3", parent=ss["Heading3"], fontName=bold_name, fontSize=10.5, leading=13,
                              spaceBefore=6, spaceAfter=3),
        }
        self.alert = ParagraphStyle("alert", parent=self.body, fontName=bold_name, textColor=colors.HexColor(
            "#9b1c1c"), borderColor=colors.HexColor("#9b1c1c"), borderWidth=0.8, borderPadding=4, spaceBefore=4,
            spaceAfter=8)
        self.mono = ParagraphStyle("mono", parent=self.small, fontName="Courier", fontSize=6.5, leading=8)
        self.font = base

    def clean(self, text: str) -> str:
        """Text the font can draw: with the base fonts, characters outside WinAnsi are transliterated."""
        if self.unicode:
            return text
        try:
            text.encode("cp1252")
            return text
        except UnicodeEncodeError:
            pass
        out = []
        for ch in text:
            try:
                ch.encode("cp1252")
                out.append(ch)
            except UnicodeEncodeError:
                rep = _REPLACE.get(ch)
                if rep is None:
                    rep = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
                    try:
                        rep.encode("cp1252")
                    except UnicodeEncodeError:
                        rep = "?"
                out.append(rep)
        return "".join(out)


_REPLACE = {"\u202f": "\u00a0", "\u2009": " ", "\u2011": "-", "≥": ">=", "≤": "<=", "→": "->", "✓": "x",
            "\u2212": "-"}

_BLOCK = {"p", "h1", "h2", "h3", "h4", "li", "td", "th", "pre", "blockquote", "div", "section", "dt", "dd"}
_INLINE = {"b": "b", "strong": "b", "i": "i", "em": "i", "u": "u"}
_SKIP = {"head", "style", "script", "title"}


class _Builder(HTMLParser):
    """Turns the HTML subset of the templates into ReportLab flowables."""

    def __init__(self, style: PdfStyle) -> None:
        super().__init__(convert_charrefs=True)
        self.s = style
        self.story: list[Flowable] = []
        self.buf: list[str] = []
        self.block: list[tuple[str, dict[str, str]]] = []
        self.skip = 0
        self.lists: list[list[Flowable]] = []
        self.tables: list[list[list[tuple[str, bool, int]]]] = []
        self.cell_markup: str | None = None
        self.in_cell = False
        self.cell_head = False
        self.cell_span = 1

    # -- helpers
    def _style_for(self, tag: str, cls: str) -> ParagraphStyle:
        if tag in ("h1", "h2", "h3", "h4"):
            return self.s.h[min(3, int(tag[1]))]
        if "clock" in cls or "alert" in cls:
            return self.s.alert
        if "small" in cls or "note" in cls:
            return self.s.small
        if "mono" in cls or tag == "pre":
            return self.s.mono
        return self.s.body

    def _flush(self, tag: str = "p", cls: str = "") -> None:
        text = "".join(self.buf).strip()
        self.buf = []
        if not text:
            return
        if self.in_cell:
            return
        para = Paragraph(text, self._style_for(tag, cls))
        if self.lists:
            self.lists[-1].append(para)
        else:
            self.story.append(para)

    # -- parser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in _SKIP:
            self.skip += 1
            return
        if self.skip:
            return
        cls = a.get("class", "")
        if tag in _INLINE:
            self.buf.append(f"<{_INLINE[tag]}>")
        elif tag == "br":
            self.buf.append("<br/>")
        elif tag == "code":
            self.buf.append('<font face="Courier">')
        elif tag == "small":
            self.buf.append('<font size="7.5">')
        elif tag == "a":
            self.buf.append(f'<a href="{html.escape(a.get("href", ""))}" color="blue">')
        elif tag in ("ul", "ol"):
            self._flush()
            self.lists.append([])
        elif tag == "table":
            self._flush()
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th") and self.tables:
            self.buf = []
            self.in_cell = True
            self.cell_head = tag == "th"
            self.cell_span = int(a.get("colspan", "1") or 1)
        elif tag == "hr":
            self._flush()
            self.story.append(HRFlowable(width="100%", thickness=0.5, color=colors.grey, spaceBefore=4,
                                         spaceAfter=4))
        elif tag in _BLOCK:
            if not self.in_cell:
                self._flush()
            if "page-break" in cls:
                self.story.append(PageBreak())
            self.block.append((tag, a))

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if self.skip:
            return
        if tag in _INLINE:
            self.buf.append(f"</{_INLINE[tag]}>")
        elif tag in ("code", "small"):
            self.buf.append("</font>")
        elif tag == "a":
            self.buf.append("</a>")
        elif tag in ("ul", "ol"):
            self._flush()
            items = self.lists.pop() if self.lists else []
            if items:
                list_items: list[Any] = [ListItem(i, leftIndent=12) for i in items]
                lst = ListFlowable(list_items,
                                   bulletType="bullet" if tag == "ul" else "1", start="•" if tag == "ul" else "1",
                                   leftIndent=12, bulletFontSize=7)
                (self.lists[-1] if self.lists else self.story).append(lst)
        elif tag in ("td", "th") and self.tables and self.in_cell:
            text = "".join(self.buf).strip()
            self.buf = []
            self.in_cell = False
            if self.tables[-1]:
                self.tables[-1][-1].append((text, self.cell_head, self.cell_span))
        elif tag == "table" and self.tables:
            rows = self.tables.pop()
            t = self._table(rows)
            if t is not None:
                (self.lists[-1] if self.lists else self.story).append(t)
        elif tag in _BLOCK:
            tag0, a = self.block.pop() if self.block else (tag, {})
            if not self.in_cell:
                self._flush(tag0, a.get("class", ""))

    def handle_data(self, data: str) -> None:
        if self.skip:
            return
        text = " ".join(data.split()) if data.strip() else (" " if data else "")
        if data[:1].isspace() and text and not text.startswith(" "):
            text = " " + text
        if data[-1:].isspace() and text and not text.endswith(" "):
            text += " "
        self.buf.append(html.escape(self.s.clean(text), quote=False))

    def _table(self, rows: list[list[tuple[str, bool, int]]]) -> Flowable | None:
        rows = [r for r in rows if r]
        if not rows:
            return None
        ncol = max(sum(span for _, _, span in r) for r in rows)
        data: list[list[Any]] = []
        spans: list[tuple[int, int, int]] = []
        heads: list[int] = []
        for ri, r in enumerate(rows):
            line: list[Any] = []
            for text, head, span in r:
                if span > 1:
                    spans.append((ri, len(line), len(line) + span - 1))
                line.append(Paragraph(text or "", self.s.head if head else self.s.cell))
                line.extend([""] * (span - 1))
            line.extend([""] * (ncol - len(line)))
            data.append(line)
            if all(h for _, h, _ in r):
                heads.append(ri)
        width = A4[0] - 4 * cm
        # Column widths in proportion to the longest text of each column (bounded).
        lens = [1.0] * ncol
        for r in rows:
            col = 0
            for text, _, span in r:
                if span == 1:
                    lens[col] = max(lens[col], min(60.0, float(len(text))))
                col += span
        total = sum(lens)
        widths = [width * v / total for v in lens]
        t = Table(data, colWidths=widths, repeatRows=1 if heads[:1] == [0] else 0)
        cmds: list[Any] = [
            ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#999999")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
            ("LEFTPADDING", (0, 0), (-1, -1), 3),
            ("RIGHTPADDING", (0, 0), (-1, -1), 3),
        ]
        for ri in heads:
            cmds.append(("BACKGROUND", (0, ri), (-1, ri), colors.HexColor("#e8ecf1")))
        for ri, c0, c1 in spans:
            cmds.append(("SPAN", (c0, ri), (c1, ri)))
        t.setStyle(TableStyle(cmds))
        return t


def html_to_pdf(document: str, *, title: str = "", style: PdfStyle | None = None, footer: str = "") -> bytes:
    """Lay out an HTML document of the templates' subset as an A4 PDF."""
    st = style or _default_style()
    b = _Builder(st)
    b.feed(document)
    b.close()
    b._flush()
    story: list[Flowable] = b.story or [Spacer(1, 1)]
    buf = io.BytesIO()
    foot = st.clean(footer)

    def on_page(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont(st.font, 7)
        canvas.setFillColor(colors.grey)
        canvas.drawString(2 * cm, 1.2 * cm, foot[:150])
        canvas.drawRightString(A4[0] - 2 * cm, 1.2 * cm, str(doc.page))
        canvas.restoreState()

    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=2 * cm, rightMargin=2 * cm, topMargin=1.8 * cm,
                            bottomMargin=2 * cm, title=st.clean(title), author="Sentinelle", creator="Sentinelle")
    doc.build([KeepTogether([]), *story], onFirstPage=on_page, onLaterPages=on_page)
    return buf.getvalue()


_STYLE: list[PdfStyle] = []


def _default_style() -> PdfStyle:
    if not _STYLE:
        _STYLE.append(PdfStyle())
    return _STYLE[0]


def merge_pdfs(parts: Iterable[bytes], progress: Callable[[int], None] | None = None) -> bytes:
    """One PDF of several (the print file of the letters), pages in order."""
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    for n, data in enumerate(parts, 1):
        w.append(PdfReader(io.BytesIO(data)))
        if progress is not None:
            progress(n)
    out = io.BytesIO()
    w.write(out)
    return out.getvalue()
