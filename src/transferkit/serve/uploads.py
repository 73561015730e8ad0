"""The images in a /predict request, read within limits: multipart `file` fields or one raw image body.

The body is read to at most `max_upload_bytes` (a Content-Length over it is refused before reading a byte), and
the parts of a multipart body are counted from its boundary before any is parsed, so neither a huge upload nor
ten thousand tiny parts cost the server more than the limits allow.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

__all__ = ["RAW_BODY_NAME", "Refused", "read_body", "read_uploads"]

RAW_BODY_NAME = "-"  # the "path" of an image sent as the raw request body
_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^\s;]+))', re.IGNORECASE)


class Refused(Exception):
    """A request the server will not process: its HTTP status, a one-line message and a kind for the metrics."""

    def __init__(self, status: int, message: str, kind: str) -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


async def read_uploads(request: Request, max_bytes: int, max_files: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of each image in the request, in order."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data" and not media.startswith("image/"):
        raise Refused(415, f"unsupported content type {media or '(none)'!r}: send multipart/form-data with 'file' "
                           f"fields, or one image as the body with Content-Type image/*", "unsupported_type")
    body = await read_body(request, max_bytes)
    if media.startswith("image/"):
        return [(RAW_BODY_NAME, body)]
    return await _multipart_files(request.headers, body, max_files)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refused (413) past `max_bytes` before it is all read."""
    too_large = Refused(413, f"request body over the {max_bytes / 2**20:g} MiB limit (--max-upload-mb)",
                        "too_large")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _multipart_files(headers: Headers, body: bytes, max_files: int) -> list[tuple[str, bytes]]:
    found = _BOUNDARY.search(headers.get("content-type", ""))
    if found is None:
        raise Refused(400, "multipart body without a boundary in its Content-Type", "bad_request")
    parts = body.count(b"--" + (found.group(1) or found.group(2)).encode("latin-1")) - 1  # the closing one too
    if parts > max_files:
        raise Refused(413, f"{parts} parts in one request; at most {max_files} images per request (--max-files)",
                      "too_many_files")

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    try:
        form = await MultiPartParser(headers, stream(), max_files=max_files, max_fields=max_files).parse()
    except MultiPartException as exc:
        raise Refused(400, f"malformed multipart body: {exc.message}", "bad_request") from None
    try:
        uploads = form.getlist("file")
        if not uploads:
            raise Refused(400, "no 'file' field in the multipart body: send each image as a 'file' field",
                          "bad_request")
        files = []
        for upload in uploads:
            if not isinstance(upload, UploadFile):
                raise Refused(400, "the 'file' field must be a file upload, not text", "bad_request")
            files.append((upload.filename or RAW_BODY_NAME, await upload.read()))
        return files
    finally:
        await form.close()
