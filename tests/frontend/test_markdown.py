"""The ``|markdown`` filter: useful markdown survives, nothing executable does."""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.template import Context, Template

from frontend.templatetags.arpad_markdown import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, render_markdown

# Each payload is something a model response, an imported prompt or a guideline could hold.
XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=http://evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<svg onload="alert(1)"><circle r="5"/></svg>',
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](java&#x09;script:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](  javascript:alert(1)  )",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](javascript:alert(1))",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "![x](data:image/png;base64,iVBORw0KGgo=)",
    '![x](http://evil.example/track.png "t" onerror=alert(1))',
    '<a href="javascript:alert(1)">x</a>',
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<style>body{background:url(http://evil.example/)}</style>",
    '<iframe src="http://evil.example/"></iframe>',
    '<object data="http://evil.example/x.swf"></object><embed src="x.swf">',
    '<meta http-equiv="refresh" content="0;url=http://evil.example/">',
    '<link rel="stylesheet" href="http://evil.example/x.css">',
    '<base href="http://evil.example/">',
    '<form action="http://evil.example/"><input name=a><button>go</button></form>',
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<img src=x onerror=alert(1)//",
    '<a href="http://ok.example/" onclick="alert(1)">x</a>',
    "[x](http://ok.example/ 'title\" onmouseover=\"alert(1)')",
    "<details open ontoggle=alert(1)>",
    "<!--><script>alert(1)</script>-->",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<template><img src=x onerror=alert(1)></template>",
    "`<script>alert(1)</script>` and\n\n```html\n<script>alert(1)</script>\n```",
    "[a]: javascript:alert(1)\n\n[ref link][a]",
    "<http://ok.example/> <javascript:alert(1)>",
    "| a | b |\n|---|---|\n| <img src=x onerror=alert(1)> | [x](javascript:alert(1)) |",
    "<p/onmouseover=alert(1)>hover</p>",
]

FORBIDDEN_TAGS = {"script", "img", "svg", "math", "iframe", "object", "embed", "style", "meta", "link", "base", "form"}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, attrs))

    handle_startendtag = handle_starttag


def parsed(html: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.elements


def assert_inert(html: str) -> None:
    for tag, attrs in parsed(html):
        assert tag in ALLOWED_TAGS, f"tag <{tag}> escaped the allowlist in {html!r}"
        assert tag not in FORBIDDEN_TAGS
        for name, value in attrs:
            assert not name.startswith("on"), f"event handler {name} in {html!r}"
            allowed = ALLOWED_ATTRIBUTES.get(tag, set()) | ({"rel"} if tag == "a" else set())
            assert name in allowed, f"attribute {name} on <{tag}> in {html!r}"
            if name == "href":
                assert urlsplit(value or "").scheme in {"http", "https", "mailto"}, f"href {value!r} in {html!r}"
            if tag == "a" and name == "rel":
                assert value == "noopener noreferrer nofollow"
    lowered = html.lower()
    for needle in ("<script", "<img", "<svg", "<iframe", "<object", "<embed", "<meta", "<style", "<base", "<form"):
        assert needle not in lowered, f"{needle} in {html!r}"


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payload_renders_inert(payload):
    assert len(XSS_PAYLOADS) >= 20
    assert_inert(render_markdown(payload))


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payload_inert_inside_markdown_context(payload):
    # The same payloads inside lists, quotes and emphasis, where parsers change state.
    for wrapped in (f"- item {payload}", f"> {payload}", f"**{payload}**", f"# {payload}", f"1. {payload}\n2. ok"):
        assert_inert(render_markdown(wrapped))


def test_raw_html_is_shown_as_text_not_dropped():
    html = render_markdown("Use <b>bold</b> like this")
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "<b>" not in html


def test_links_keep_safe_urls_with_strict_rel():
    html = render_markdown("[docs](https://example.org/a?b=1) and [mail](mailto:a@example.org)")
    assert '<a href="https://example.org/a?b=1" rel="noopener noreferrer nofollow">docs</a>' in html
    assert 'href="mailto:a@example.org"' in html


@pytest.mark.parametrize("url", ["/admin/", "#top", "ftp://example.org/x", "data:text/plain,hi"])
def test_links_to_other_schemes_or_relative_urls_lose_their_href(url):
    html = render_markdown(f"[x]({url})")
    assert "href" not in html
    assert ">x</a>" in html or "x" in html


def test_images_become_labelled_links_never_img():
    html = render_markdown("![a chart](https://example.org/c.png)")
    assert "<img" not in html
    assert '<a href="https://example.org/c.png" rel="noopener noreferrer nofollow">[image: a chart]</a>' in html


def test_code_blocks_tables_and_lists_survive():
    source = (
        "```python\nif a < b:\n    print('<tag>')\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n1. one\n2. two\n\n> quote"
    )
    html = render_markdown(source)
    assert "<pre><code>if a &lt; b:\n    print('&lt;tag&gt;')\n</code></pre>" in html
    assert "<table>" in html and "<td>1</td>" in html
    assert "<ol>" in html and "<li>one</li>" in html
    assert "<blockquote>" in html
    assert "style=" not in html  # column alignment styles would be blocked by the CSP anyway


def test_template_filter_marks_output_safe_and_handles_none():
    rendered = Template("{% load arpad_markdown %}{{ text|markdown }}").render(Context({"text": "**hi** <i>x</i>"}))
    assert "<strong>hi</strong>" in rendered
    assert "&lt;i&gt;x&lt;/i&gt;" in rendered
    assert render_markdown(None) == ""


def test_single_newlines_are_line_breaks_and_blank_lines_paragraphs():
    # OpenAssistant-style text: a list item followed by its explanation on the next line.
    html = render_markdown("1. The 20/20/20 rule\nFor every 20 minutes\n\nline one\nline two\n\nnext paragraph")
    assert "<li>The 20/20/20 rule<br>\nFor every 20 minutes</li>" in html
    assert "<p>line one<br>\nline two</p>" in html
    assert "<p>next paragraph</p>" in html


def test_line_breaks_keep_fenced_code_as_is_and_payloads_inert():
    html = render_markdown("```\nx = 1\ny = 2\n```\n<script>alert(1)</script>\n<img src=x onerror=alert(1)>")
    assert "<pre><code>x = 1\ny = 2\n</code></pre>" in html  # no <br> inside code
    assert "&lt;script&gt;alert(1)&lt;/script&gt;<br>" in html
    assert_inert(html)
