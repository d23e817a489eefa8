"""``|markdown``: render untrusted text (prompts, model responses, guidelines) as safe HTML.

Two layers, so that a bug in one is caught by the other:

1. markdown-it-py in CommonMark mode with tables and with raw HTML *disabled*: any ``<tag>``
   in the source comes out escaped, as text. Its own link validator already refuses
   ``javascript:``, ``vbscript:``, ``file:`` and most ``data:`` URLs. ``breaks`` is on: a
   single newline is a ``<br>`` (chat text is written line by line, not as CommonMark
   paragraphs, and annotators must see it as written); a blank line starts a paragraph.
2. nh3 (ammonia) with a strict allowlist of tags and attributes; links keep only absolute
   http(s)/mailto URLs and get ``rel="noopener noreferrer nofollow"``.

Images are never rendered as ``<img>``: a model-chosen image URL would make the
annotator's browser call out to it (tracking, CSP noise). They become a plain link to the
image, labelled with its alt text, which the allowlist then treats like any other link.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import nh3
from django import template
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml

register = template.Library()

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "del", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
ALLOWED_SCHEMES = {"http", "https", "mailto"}
LINK_REL = "noopener noreferrer nofollow"


def _image_as_link(self: Any, tokens: list[Any], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = token.attrGet("src") or ""
    alt = self.renderInlineAsText(token.children or [], options, env) or "image"
    return f'<a href="{escapeHtml(src)}">[image: {escapeHtml(alt)}]</a>'


def _make_parser() -> MarkdownIt:
    options = {"html": False, "breaks": True, "linkify": False, "typographer": False}
    md = MarkdownIt("commonmark", options).enable("table")
    md.add_render_rule("image", _image_as_link)
    return md


_MD = _make_parser()


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    """nh3 attribute filter: only absolute http(s)/mailto hrefs survive; relative ones go too."""
    if tag == "a" and attribute == "href":
        scheme = urlsplit(value.strip()).scheme.lower()
        return value if scheme in ALLOWED_SCHEMES else None
    if tag == "ol" and attribute == "start":
        return value if value.isdigit() and len(value) < 7 else None
    return value


def sanitize_html(html: str) -> str:
    return nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        clean_content_tags={"script", "style"},
        attributes=ALLOWED_ATTRIBUTES,
        attribute_filter=_keep_attribute,
        url_schemes=ALLOWED_SCHEMES,
        link_rel=LINK_REL,
        strip_comments=True,
    )


def render_markdown(text: Any) -> str:
    """Markdown source (untrusted) to sanitized HTML (a plain ``str``)."""
    if text is None:
        return ""
    return sanitize_html(_MD.render(str(text)))


@register.filter(name="markdown")
def markdown_filter(text: Any) -> SafeString:
    return mark_safe(render_markdown(text))  # noqa: S308 - sanitized by nh3 with a strict allowlist
