"""A MkDocs hook: the pages' TeX math as MathML, written at build time, so the site needs no network
(MathJax from a CDN showed raw ``\\[a_t = ...\\]`` offline).  Browsers draw MathML themselves.

pymdownx.arithmatex (``generic: true``) wraps each formula as ``<span class="arithmatex">\\(...\\)</span>``
or ``<div class="arithmatex">\\[...\\]</div>``; latex2mathml turns the TeX inside into ``<math>``.
"""
import html
import re

from latex2mathml.converter import convert

_MATH = re.compile(r'<(span|div) class="arithmatex">\\([(\[])(.*?)\\[)\]]</\1>', re.S)


def to_mathml(page_html: str) -> str:
    """``page_html`` with every arithmatex formula as MathML (display math as a block)."""
    def replace(match):
        tag, opening, tex = match.groups()
        display = "block" if opening == "[" else "inline"
        return convert(html.unescape(tex).strip(), display=display)
    return _MATH.sub(replace, page_html)


def on_page_content(page_html, **kwargs):
    return to_mathml(page_html)
