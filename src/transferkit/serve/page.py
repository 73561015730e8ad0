"""The web page at `GET /`: one self-contained HTML file (CSS and JS inline) that talks to this server only.

Its Content-Security-Policy says so to the browser too: scripts, styles, images and requests may come from this
origin (and the page's own inline code, blob: previews of the chosen files), from nowhere else.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

__all__ = ["PAGE_HEADERS", "page_html"]

PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                               "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@lru_cache(maxsize=1)
def page_html() -> str:
    return resources.files("transferkit.serve").joinpath("index.html").read_text(encoding="utf-8")
