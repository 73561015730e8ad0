"""Reading labelled texts: CSV, JSON Lines and class folders; the bad-row corpus is skipped and reported row by
row, never stopping the read; what makes a whole file unusable is one line; repeats and modality detection."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from text_corpus import BAD_CSV_LINES, HAM, SPAM, write_csv, write_folder, write_jsonl

from transferkit.errors import UserError
from transferkit.text.data import detect_modality, read_texts, read_unlabelled
from transferkit.text.repeats import LEAK, repeated_texts


def test_csv_with_the_bad_row_corpus(tmp_path: Path) -> None:
    data = read_texts(write_csv(tmp_path / "mail.csv", bad=True))
    assert data.classes == ["ham", "spam"]
    assert len(data) == len(SPAM) + len(HAM)
    assert data.counts() == {"ham": len(HAM), "spam": len(SPAM)}
    assert [data.classes[label] for label in data.labels[:2]] == ["spam", "ham"]  # the file's order
    assert len(data.bad) == len(BAD_CSV_LINES)
    first_bad_line = len(SPAM) + len(HAM) + 2  # after the header and the good rows
    for row, (_, why) in zip(data.bad, BAD_CSV_LINES):
        assert why in row.reason
        assert row.file == tmp_path / "mail.csv"
    assert [row.line for row in data.bad] == list(range(first_bad_line, first_bad_line + len(BAD_CSV_LINES)))
    assert data.origins[0] == f"{tmp_path / 'mail.csv'} line 2"


def test_invalid_utf8_is_read_with_replacement_only_when_asked(tmp_path: Path) -> None:
    data = read_texts(write_csv(tmp_path / "mail.csv", bad=True), replace_invalid_utf8=True)
    assert "caf\ufffd au lait, bad bytes" in data.texts
    assert not any("UTF-8" in row.reason for row in data.bad)


def test_columns_are_chosen_by_name(tmp_path: Path) -> None:
    path = tmp_path / "named.csv"
    path.write_text("id,Body,Category\n1,hello there friend,a\n2,buy cheap pills now,b\n3,see you soon,a\n",
                    encoding="utf-8")
    data = read_texts(path, text_column="body", label_column="category")
    assert data.texts == ["hello there friend", "buy cheap pills now", "see you soon"]
    assert data.labels.tolist() == [0, 1, 0]
    with pytest.raises(UserError, match=r"no 'text' column — name the right one with --text-column"):
        read_texts(path)


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ("text,label\n", "has no rows"),
    ("text,label\nonly one class,a\nstill one class,a\n", "only one class"),
    ("text,label\n ,a\n,b\n", "all 2 row(s) were left out"),
])
def test_unusable_files_are_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=re.escape(message)) as caught:
        read_texts(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_json_lines(tmp_path: Path) -> None:
    data = read_texts(write_jsonl(tmp_path / "mail.jsonl"))
    assert len(data) == len(SPAM) + len(HAM)
    assert [(row.line, row.reason) for row in data.bad] == [(len(SPAM) + len(HAM) + 1, "not a JSON object"),
                                                            (len(SPAM) + len(HAM) + 2, "missing label")]
    with pytest.raises(UserError, match="no record has a 'body' field"):
        read_texts(tmp_path / "mail.jsonl", text_column="body")
    array = tmp_path / "array.json"
    array.write_text('[{"text": "hi", "label": "a"}]', encoding="utf-8")
    with pytest.raises(UserError, match="is one JSON array; write one JSON object per line"):
        read_texts(array)


def test_class_folders_of_txt_files(tmp_path: Path) -> None:
    data = read_texts(write_folder(tmp_path / "mail"))
    assert data.classes == ["ham", "spam"] and len(data) == len(SPAM) + len(HAM)
    assert sorted((row.file.name, row.line) for row in data.bad) == [("empty.txt", None), ("latin1.txt", None)]


def test_repeats_same_class_and_leaks(tmp_path: Path) -> None:
    path = tmp_path / "dupes.csv"
    path.write_text("text,label\nhello  world,a\nbuy now,b\nhello world,a\nbuy now,a\nfresh,b\n", encoding="utf-8")
    data = read_texts(path)
    reasons = repeated_texts(data)
    assert sorted(reasons) == [2, 3]
    assert "a duplicate; kept once" in reasons[2] and "line 2" in reasons[2]
    assert LEAK in reasons[3] and "of class b" in reasons[3]
    kept = data.without(reasons)
    assert kept.texts == ["hello  world", "buy now", "fresh"]
    assert [(row.line, row.reason) for row in kept.bad] == [(4, reasons[2]), (5, reasons[3])]


def test_detect_modality(tmp_path: Path) -> None:
    assert detect_modality(write_csv(tmp_path / "t.csv")) == "text"
    assert detect_modality(write_jsonl(tmp_path / "t.jsonl")) == "text"
    assert detect_modality(write_folder(tmp_path / "folder")) == "text"
    manifest = tmp_path / "images.csv"
    manifest.write_text("path,label\na.png,cat\n", encoding="utf-8")
    assert detect_modality(manifest) == "image"
    (tmp_path / "photos" / "cat").mkdir(parents=True)
    (tmp_path / "photos" / "cat" / "1.png").write_bytes(b"")
    assert detect_modality(tmp_path / "photos") == "image"
    assert detect_modality(tmp_path / "t.csv", text_column="body") == "image"


def test_unlabelled_texts_one_per_line_or_csv(tmp_path: Path) -> None:
    lines = tmp_path / "inbox.txt"
    lines.write_bytes(b"first message\n\n  \nsecond \xff message\nthird\n")
    texts, origins, bad = read_unlabelled(lines)
    assert texts == ["first message", "third"] and origins[1] == f"{lines} line 5"
    assert [(row.line, "UTF-8" in row.reason) for row in bad] == [(4, True)]
    texts, _, _ = read_unlabelled(write_csv(tmp_path / "mail.csv"))
    assert len(texts) == len(SPAM) + len(HAM)
