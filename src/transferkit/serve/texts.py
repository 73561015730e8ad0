"""The texts in a /predict request to a text model, read within limits: a JSON body `{"texts": ["...", ...]}`.

The body is read to at most `max_upload_bytes` (as for images); more than `max_texts` texts is 413; anything else
that is not a non-empty list of non-empty strings is 400 with one line saying what was received. A text longer
than the model's window is not an error: it is cut, as `transferkit predict` cuts it.
"""

from __future__ import annotations

import json

from starlette.requests import Request

from transferkit.serve.uploads import Refused, read_body

__all__ = ["read_texts_request"]

_EXAMPLE = '{"texts": ["first text", "second text"]}'


async def read_texts_request(request: Request, max_bytes: int, max_texts: int) -> list[str]:
    """The texts of the request, in order."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise Refused(415, f"unsupported content type {media or '(none)'!r}: this is a text model; send "
                           f"Content-Type application/json with a body like {_EXAMPLE}", "unsupported_type")
    body = await read_body(request, max_bytes)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the body is not JSON ({exc}): send {_EXAMPLE}", "bad_request") from None
    texts = data.get("texts") if isinstance(data, dict) else None
    if not isinstance(texts, list) or not texts:
        raise Refused(400, f"the body needs a non-empty list \"texts\", got {_shape(data)}: send {_EXAMPLE}",
                      "bad_request")
    if len(texts) > max_texts:
        raise Refused(413, f"{len(texts)} texts in one request; at most {max_texts} per request (--max-files)",
                      "too_many_files")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise Refused(400, f"texts[{i}] is {type(text).__name__}, not a string: send each text as a string",
                          "bad_text")
        if not text.strip():
            raise Refused(400, f"texts[{i}] is empty: send texts with some words in them", "bad_text")
    return texts


def _shape(data: object) -> str:
    if isinstance(data, dict):
        return f"an object with keys {sorted(data)[:5]}" if data else "an empty object"
    return type(data).__name__ if data is not None else "null"
