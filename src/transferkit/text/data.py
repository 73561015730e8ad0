"""Labelled texts from a CSV file, a JSON Lines file, or a folder with one sub-folder of `.txt` files per class.

Bad rows never stop reading: an empty or whitespace-only text, invalid UTF-8 (decoded with replacement
characters only if asked), a missing label, a row with more fields than the header, a text longer than
`MAX_TEXT_CHARS` (such as a 10 MB line), a line that is not JSON -- each is skipped and listed as a `BadRow`
with its file, line and reason. What makes the whole file unusable (no such file, an empty file, no text or label
column, fewer than two classes) is a `UserError` in one line. Class order is plain `sorted()` on the label
strings, as for image folders; texts keep the file's order.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from transferkit.data.files import IMAGE_EXTENSIONS, is_ignored
from transferkit.errors import UserError

__all__ = ["MAX_TEXT_CHARS", "TEXT_SUFFIXES", "BadRow", "LabelledTexts", "check_text_path", "detect_modality",
           "read_texts", "read_unlabelled"]

MAX_TEXT_CHARS = 131_072  # the csv module's field limit: one text longer than this is skipped, not read
TEXT_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")
_HINT = ("pass a CSV or JSON Lines file with text and label columns, or a folder with one sub-folder of .txt "
         "files per class")


@dataclass(frozen=True)
class BadRow:
    """A row (or file) left out, and why. `line` is the first line of the row in its file (None for a file)."""

    file: Path
    line: int | None
    reason: str

    def where(self) -> str:
        return str(self.file) if self.line is None else f"{self.file} line {self.line}"

    def __str__(self) -> str:
        return f"{self.where()}: {self.reason}"


@dataclass(frozen=True)
class LabelledTexts:
    """Texts and their labels (indices into `classes`); `origins[i]` says where text i came from ("file line
    N" or a file), and `bad` lists the rows that were left out."""

    source: Path
    texts: list[str]
    labels: np.ndarray
    classes: list[str]
    origins: list[str] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.texts)

    def counts(self) -> dict[str, int]:
        per_label = np.bincount(self.labels.astype(np.int64), minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, per_label)}

    def subset(self, indices: list[int] | np.ndarray) -> LabelledTexts:
        """The chosen texts, same classes (label indices stay valid), the same bad rows."""
        chosen = [int(i) for i in indices]
        return LabelledTexts(self.source, [self.texts[i] for i in chosen], self.labels[chosen].astype(np.int64),
                             list(self.classes), [self.origins[i] for i in chosen], list(self.bad))

    def without(self, reasons: dict[int, str]) -> LabelledTexts:
        """These texts minus the ones in `reasons` (index -> why), which join the bad rows."""
        keep = [i for i in range(len(self.texts)) if i not in reasons]
        moved = [BadRow(*_split_origin(self.origins[i]), why) for i, why in sorted(reasons.items())]
        kept = self.subset(keep)
        return LabelledTexts(kept.source, kept.texts, kept.labels, kept.classes, kept.origins, [*self.bad, *moved])


def _split_origin(origin: str) -> tuple[Path, int | None]:
    file, sep, line = origin.rpartition(" line ")
    return (Path(file), int(line)) if sep and line.isdigit() else (Path(origin), None)


def check_text_path(path: str | os.PathLike[str]) -> Path:
    """`path` if it can hold labelled texts (a folder, or a .csv/.jsonl file), else the one-line error. Cheap."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data not found: {path} — {_HINT}")
    if not path.is_dir() and path.suffix.lower() not in TEXT_SUFFIXES:
        raise UserError(f"{path} is not a .csv or .jsonl file — {_HINT}")
    return path


def detect_modality(path: str | os.PathLike[str], text_column: str = "text") -> str:
    """"text" or "image": a JSON Lines file, a CSV whose header names `text_column` (and no `path` column), or a
    folder holding .txt files and no images is text; anything else is read as images."""
    path = Path(path)
    suffix = path.suffix.lower()
    if path.is_file() and suffix in (".jsonl", ".ndjson", ".json"):
        return "text"
    if path.is_file() and suffix == ".csv":
        try:
            with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
                header = [name.strip().lower() for name in next(csv.reader(handle), [])]
        except (OSError, csv.Error):
            return "image"  # the image reader says what is wrong with it
        return "text" if text_column.strip().lower() in header and "path" not in header else "image"
    if path.is_dir():
        seen_text = False
        for file in path.rglob("*"):  # the first image decides: a large photo folder is not listed whole
            suffix = file.suffix.lower()
            if suffix in IMAGE_EXTENSIONS and not is_ignored(file):
                return "image"
            seen_text |= suffix == ".txt" and not is_ignored(file)
        return "text" if seen_text else "image"
    return "image"


def read_texts(path: str | os.PathLike[str], text_column: str = "text", label_column: str = "label",
               replace_invalid_utf8: bool = False) -> LabelledTexts:
    """Labelled texts from a CSV, a JSON Lines file or a class-per-folder tree of .txt files (see the module
    docstring). Refuses data that cannot train a classifier: no usable text, or fewer than two classes."""
    path = check_text_path(path)
    if path.is_dir():
        rows, bad = _read_folder(path, replace_invalid_utf8)
    else:
        rows, bad = _read_table(path, text_column, label_column, replace_invalid_utf8)
    if not rows and not bad:
        raise UserError(f"{path} has no rows of data — add one row per text: text,label")
    if not rows:
        raise UserError(f"no usable texts in {path}: all {len(bad)} row(s) were left out (the first: {bad[0]}) — "
                        f"fix the rows")
    classes = sorted({label for _, _, label in rows})
    if len(classes) < 2:
        raise UserError(f"only one class ({classes[0]}) in {path}: training needs texts of at least two classes")
    index = {name: i for i, name in enumerate(classes)}
    return LabelledTexts(path, [text for _, text, _ in rows], np.array([index[lab] for _, _, lab in rows],
                         dtype=np.int64), classes, [origin for origin, _, _ in rows], bad)


def read_unlabelled(path: str | os.PathLike[str], text_column: str = "text",
                    replace_invalid_utf8: bool = False) -> tuple[list[str], list[str], list[BadRow]]:
    """Texts to predict: a CSV or JSON Lines file with `text_column` (any label ignored), else a plain text file
    with one text per line. Returns the texts, where each came from, and the lines left out."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"text file not found: {path} — pass a file with one text per line, or a CSV")
    if path.suffix.lower() in TEXT_SUFFIXES:
        rows, bad = _read_table(path, text_column, None, replace_invalid_utf8)
    else:
        rows, bad = [], []
        for number, line in enumerate(_decoded(path).splitlines(), start=1):
            text, problem = _check_text(line, replace_invalid_utf8)
            if problem == "empty":
                continue  # blank lines separate nothing here: ignored, not reported
            if problem:
                bad.append(BadRow(path, number, problem))
            else:
                rows.append((f"{path} line {number}", text, ""))
    return [text for _, text, _ in rows], [origin for origin, _, _ in rows], bad


# --- reading -----------------------------------------------------------------------------------------------

_Row = tuple[str, str, str]  # origin, text, label


def _decoded(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 kept as lone surrogates, so each row can be judged alone."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc} — fix its permissions") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return data.decode("utf-8", errors="surrogateescape")


def _check_text(text: str, replace_invalid_utf8: bool) -> tuple[str, str]:
    """The usable text and "" , or "" and why it is not usable ("empty" for blank text)."""
    if any("\udc80" <= ch <= "\udcff" for ch in text):
        if not replace_invalid_utf8:
            return "", "invalid UTF-8 (pass --replace-invalid-utf8 to read it with replacement characters)"
        text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    if not text.strip():
        return "", "empty"
    if len(text) > MAX_TEXT_CHARS:
        return "", f"a text of {len(text):,} characters, over the {MAX_TEXT_CHARS:,} one text may have"
    return text, ""


def _reason(problem: str) -> str:
    return "empty or whitespace-only text" if problem == "empty" else problem


def _read_table(path: Path, text_column: str, label_column: str | None,
                replace_invalid_utf8: bool) -> tuple[list[_Row], list[BadRow]]:
    content = _decoded(path)
    if not content.strip():
        raise UserError(f"{path} is empty — {_HINT}")
    if path.suffix.lower() == ".csv":
        return _csv_rows(path, content, text_column, label_column, replace_invalid_utf8)
    if content.lstrip().startswith("["):
        raise UserError(f"{path} is one JSON array; write one JSON object per line (JSON Lines), such as "
                        f'{{"{text_column}": "...", "{label_column or "label"}": "..."}}')
    return _jsonl_rows(path, content, text_column, label_column, replace_invalid_utf8)


def _column(path: Path, header: list[str], name: str, flag: str) -> int:
    wanted = [h.strip().lower() for h in header]
    if name.strip().lower() not in wanted:
        raise UserError(f"{path} has columns {', '.join(header) or '(none)'} but no {name!r} column — name the "
                        f"right one with {flag}")
    return wanted.index(name.strip().lower())


def _csv_rows(path: Path, content: str, text_column: str, label_column: str | None,
              replace_invalid_utf8: bool) -> tuple[list[_Row], list[BadRow]]:
    reader = csv.reader(io.StringIO(content, newline=""))
    header = next(reader, None) or []
    text_at = _column(path, header, text_column, "--text-column")
    label_at = _column(path, header, label_column, "--label-column") if label_column is not None else None
    rows: list[_Row] = []
    bad: list[BadRow] = []
    for line, values, error in _csv_records(reader):
        if error:
            bad.append(BadRow(path, line, error))
            continue
        if not any(value.strip() for value in values):
            continue  # blank lines are harmless
        if len(values) > len(header):
            bad.append(BadRow(path, line, f"{len(values)} fields, the header has {len(header)} (unquoted comma?)"))
            continue
        text, problem = _check_text(values[text_at] if text_at < len(values) else "", replace_invalid_utf8)
        label = _label(values, label_at)
        if problem or label is None:
            bad.append(BadRow(path, line, _reason(problem) if problem else "missing label"))
            continue
        rows.append((f"{path} line {line}", text, label))
    return rows, bad


def _label(values: list[str], at: int | None) -> str | None:
    if at is None:
        return ""
    label = values[at].strip() if at < len(values) else ""
    if not label or any("\udc80" <= ch <= "\udcff" for ch in label):
        return None
    return label


def _csv_records(reader: csv._reader) -> Iterator[tuple[int, list[str], str]]:  # type: ignore[name-defined]
    """(first line, fields, error) for each record; a record the csv module refuses (a field over its limit) is an
    error, and reading goes on after it."""
    last = reader.line_num
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            too_long = "field larger than field limit" in str(exc)
            yield last + 1, [], (f"a field over the {MAX_TEXT_CHARS:,} characters one text may have" if too_long
                                 else f"not readable as CSV ({exc})")
            last = reader.line_num
            continue
        yield last + 1, values, ""
        last = reader.line_num


def _jsonl_rows(path: Path, content: str, text_column: str, label_column: str | None,
                replace_invalid_utf8: bool) -> tuple[list[_Row], list[BadRow]]:
    rows: list[_Row] = []
    bad: list[BadRow] = []
    seen_text = seen_label = False
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) > MAX_TEXT_CHARS:
            bad.append(BadRow(path, number, f"a line of {len(line):,} characters, over the {MAX_TEXT_CHARS:,} one "
                                            f"text may have"))
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            bad.append(BadRow(path, number, "not a JSON object"))
            continue
        seen_text |= text_column in record
        seen_label |= label_column is None or label_column in record
        raw, label = record.get(text_column), record.get(label_column) if label_column is not None else ""
        text, problem = _check_text(raw if isinstance(raw, str) else "", replace_invalid_utf8)
        if problem:
            bad.append(BadRow(path, number, _reason(problem) if isinstance(raw, str) or raw is None
                              else f"{text_column} is not a string"))
        elif label_column is not None and (label is None or isinstance(label, (dict, list)) or not str(label).strip()):
            bad.append(BadRow(path, number, "missing label"))
        else:
            rows.append((f"{path} line {number}", text, str(label).strip()))
    for seen, name, flag in ((seen_text, text_column, "--text-column"), (seen_label, label_column, "--label-column")):
        if not seen and (rows or bad):
            raise UserError(f"{path}: no record has a {name!r} field — name the right one with {flag}")
    return rows, bad


def _read_folder(root: Path, replace_invalid_utf8: bool) -> tuple[list[_Row], list[BadRow]]:
    """Every .txt file under `root/<class>/` (nested folders included), one text per file."""
    rows: list[_Row] = []
    bad: list[BadRow] = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not is_ignored(p)):
        for file in sorted(class_dir.rglob("*.txt")):
            if is_ignored(file) or not file.is_file():
                continue
            if file.stat().st_size > 4 * MAX_TEXT_CHARS:  # never read a huge file whole
                bad.append(BadRow(file, None, f"a file of {file.stat().st_size:,} bytes, over the "
                                              f"{MAX_TEXT_CHARS:,} characters one text may have"))
                continue
            text, problem = _check_text(_decoded(file), replace_invalid_utf8)
            if problem:
                bad.append(BadRow(file, None, _reason(problem)))
            else:
                rows.append((str(file), text, class_dir.name))
    if not rows and not bad:
        raise UserError(f"no .txt files in {root}: expected one sub-folder per class, e.g. {root}/spam/1.txt")
    return rows, bad
