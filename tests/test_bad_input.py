"""Every case of the bad-input corpus (`bad_inputs.py`) through every command it applies to, via the real CLI.

The contract: no traceback; exit 0 with the file listed as skipped (and why), used or silently ignored; or
exit 2 with one line naming the problem. File cases share one messy data folder, so each command runs on it
once; the other cases run one command each, in-process (`cli.main`), and a few as real processes.
Adding a command (e.g. `extract DATA --out FEATURES`) is one line in COMMANDS.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import pytest
from bad_inputs import CASES, FAILS, IGNORED, SKIPPED, USED, Case, malicious_weights
from conftest import write_photo_dataset

import transferkit
from transferkit.cli.main import main
from transferkit.training.run import TrainResult

TINY_TRAIN = ["--strategy", "frozen", "--probe-epochs", "0", "--epochs", "1", "--batch-size", "8",
              "--val-split", "0.25"]
_TRAIN_FLAGS = {"--epochs", "--lr", "--batch-size", "--val-split", "--unfreeze-blocks", "--backbone", "--layer",
                "--weights"}


@dataclass(frozen=True)
class Inputs:
    data: Path
    run: Path
    out: Path


@dataclass(frozen=True)
class Command:
    argv: Callable[[Inputs], list[str]]
    takes: frozenset[str]  # "images", "labelled" (folders and CSV manifests), "bundle", flags, ...
    log: str | None = None  # file in `out` that lists skipped files; None: they are listed on stderr


COMMANDS: dict[str, Command] = {
    "train": Command(lambda i: ["train", str(i.data), "--out", str(i.out), *TINY_TRAIN],
                     frozenset({"images", "labelled", "trains", *_TRAIN_FLAGS}), log="train.log"),
    "evaluate": Command(lambda i: ["evaluate", str(i.run), str(i.data)],
                        frozenset({"images", "labelled", "bundle", "evaluates"})),
    "predict": Command(lambda i: ["predict", str(i.run), str(i.data)], frozenset({"images", "bundle", "--top"})),
    "classify": Command(lambda i: ["classify", str(i.data)], frozenset({"images", "--top", "--backbone", "--weights"})),
    "extract": Command(lambda i: ["extract", str(i.data), "--out", str(i.out)],
                       frozenset({"images", "labelled", "--backbone", "--weights", "--layer"})),
}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str
    log: str  # what lists skipped files: the run log, or stderr

    def skip_line(self, path: Path) -> str | None:
        return next((line for line in self.log.splitlines() if line.strip().startswith(f"skipped {path}:")), None)


def run_cli(command: str, inputs: Inputs, extra: Sequence[str] = ()) -> Result:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main([*COMMANDS[command].argv(inputs), *extra])
        except SystemExit as exc:  # argparse's flag errors
            code = int(exc.code or 0)
    log_name = COMMANDS[command].log
    log_path = inputs.out / log_name if log_name else None
    log = log_path.read_text() if log_path is not None and log_path.exists() else err.getvalue()
    return Result(code, out.getvalue(), err.getvalue(), log)


def _applies(case: Case, command: str) -> bool:
    return case.needs <= COMMANDS[command].takes


# Every case through `predict` in the fast loop (`-m "not slow"`); through the other commands in the full suite.
PAIRS = [pytest.param(case, command, id=f"{case.name}-{command}",
                      marks=() if command == "predict" else pytest.mark.slow)
         for case in CASES for command in COMMANDS if _applies(case, command)]


@pytest.fixture(scope="module")
def good_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_photo_dataset(tmp_path_factory.mktemp("good") / "data", per_class=4, size=64)


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory, good_data: Path) -> tuple[Path, dict[str, Path]]:
    """Good photos plus every privileged-free file case, each planted in the cat folder."""
    root = Path(shutil.copytree(good_data, tmp_path_factory.mktemp("messy") / "data"))
    planted = {case.name: case.make(root / "cat") for case in CASES if case.kind == "file" and not case.unprivileged}
    return root, planted  # type: ignore[return-value]


@pytest.fixture(scope="module")
def messy_results(messy: tuple[Path, dict[str, Path]], trained_run: TrainResult,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Result]]:
    """Each command run once on the messy folder, on first use."""
    cache: dict[str, Result] = {}

    def result(command: str) -> Result:
        if command not in cache:
            out = tmp_path_factory.mktemp(f"messy-{command}") / "out"
            cache[command] = run_cli(command, Inputs(messy[0], trained_run.run_dir, out))
        return cache[command]
    yield result


def _assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.err and "Traceback" not in result.out, result.err


def _assert_one_line_error(result: Result, fragment: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert fragment in lines[0], (fragment, lines[0])


def _check_file_case(case: Case, command: str, result: Result, path: Path) -> None:
    expect = case.expect_for(command)
    _assert_no_traceback(result)
    assert result.code == 0, result.err
    line = result.skip_line(path)
    if expect.outcome == SKIPPED:
        assert line is not None, f"{path} not listed as skipped:\n{result.log}"
        assert expect.fragment in line, line
        return
    assert line is None, line
    if expect.outcome == USED and command in ("predict", "classify"):
        assert f"{path}:" in result.out
    if expect.outcome == IGNORED:
        assert str(path) not in result.out + result.log
        if expect.fragment:
            assert expect.fragment in result.out


@pytest.mark.parametrize("case,command", PAIRS)
def test_bad_input(case: Case, command: str, messy: tuple[Path, dict[str, Path]],
                   messy_results: Callable[[str], Result], trained_run: TrainResult, good_data: Path,
                   tmp_path: Path) -> None:
    if case.unprivileged:
        pytest.skip("run as another user by test_unreadable_file_as_unprivileged_user")
    if case.kind == "file":
        _check_file_case(case, command, messy_results(command), messy[1][case.name])
        return
    inputs = Inputs(good_data, trained_run.run_dir, tmp_path / "out")
    extra: list[str] = []
    if case.kind == "data":
        inputs = Inputs(case.make(tmp_path, good_data), trained_run.run_dir, tmp_path / "out")  # type: ignore[arg-type]
    elif case.kind == "bundle":
        inputs = Inputs(good_data, case.make(tmp_path, trained_run.run_dir), tmp_path / "out")  # type: ignore[arg-type]
    elif case.kind == "flag":
        extra = case.make()  # type: ignore[assignment]
        if extra == ["--weights", "MALICIOUS"]:
            extra = ["--weights", str(malicious_weights(tmp_path / "evil"))]
    result = run_cli(command, inputs, extra)
    _assert_no_traceback(result)
    expect = case.expect_for(command)
    if expect.outcome == FAILS:
        _assert_one_line_error(result, expect.fragment)
    else:
        assert result.code == 0, result.err
        assert expect.fragment in result.log, result.log
    assert not (tmp_path / "evil" / "pwned").exists(), "a pickle in a weights file ran code"


def test_the_corpus_is_large_and_covers_every_command() -> None:
    assert len(CASES) >= 30
    for command in COMMANDS:
        assert sum(_applies(case, command) for case in CASES) >= 30, command


def test_messy_counts_add_up(messy: tuple[Path, dict[str, Path]], messy_results: Callable[[str], Result],
                             good_data: Path) -> None:
    """Every usable file really was used: train's split and evaluate's support count them all."""
    good = len(list(good_data.glob("*/*.*")))
    used = {command: good + sum(1 for case in CASES if case.kind == "file" and not case.unprivileged
                                and case.expect_for(command).outcome == USED)
            for command in ("train", "evaluate")}
    train = messy_results("train")
    found = re.search(r"3 classes, (\d+) training and (\d+) validation images", train.out)
    assert found is not None, train.out
    originals = 2  # the first copies of the leaked and the duplicated file, used everywhere
    assert int(found[1]) + int(found[2]) == used["train"] + originals
    assert "warning: 1 of them had the same content as a file in another class" in train.out
    evaluated = re.search(r"images (\d+)", messy_results("evaluate").out)
    assert evaluated is not None and int(evaluated[1]) == used["evaluate"] + originals


def _unprivileged_prefix() -> list[str]:
    if os.geteuid() != 0:
        return []  # an ordinary user cannot read a chmod 000 file already
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make a file unreadable")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


_SCRIPT = """
import io, json, sys
from contextlib import redirect_stderr, redirect_stdout
from transferkit.cli.main import main
results = []
for argv in json.loads(sys.argv[1]):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    results.append({"code": code, "out": out.getvalue(), "err": err.getvalue()})
print(json.dumps(results))
"""


@pytest.mark.slow
def test_unreadable_file_as_unprivileged_user(good_data: Path, trained_run: TrainResult) -> None:
    """As a user who may not read it, a permission-denied file is skipped and named by every command."""
    prefix = _unprivileged_prefix()
    case = next(c for c in CASES if c.unprivileged)
    work = Path(tempfile.mkdtemp(prefix="transferkit-unprivileged-"))
    try:
        work.chmod(0o777)
        data = Path(shutil.copytree(good_data, work / "data"))
        locked = case.make(data / "cat")
        run = Path(shutil.copytree(trained_run.run_dir, work / "run"))
        for path in [work, *work.rglob("*")]:
            if path != locked and not path.is_symlink():
                path.chmod(0o777 if path.is_dir() else 0o644)
        commands = {name: cmd for name, cmd in COMMANDS.items() if _applies(case, name)}
        outs = {name: work / f"out-{name}" for name in commands}
        argvs = [cmd.argv(Inputs(data, run, outs[name])) for name, cmd in commands.items()]
        env = {**os.environ, "HOME": str(work), "PYTHONPATH": str(Path(transferkit.__file__).parents[1])}
        proc = subprocess.run([*prefix, sys.executable, "-c", _SCRIPT, json.dumps(argvs)], capture_output=True,
                              text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        for (name, cmd), result in zip(commands.items(), json.loads(proc.stdout)):
            log = (outs[name] / cmd.log).read_text() if cmd.log else result["err"]
            assert result["code"] == 0 and "Traceback" not in result["err"], (name, result["err"])
            assert f"skipped {locked}: permission denied" in log, (name, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.slow
def test_a_real_process_with_bad_files_prints_no_traceback(messy: tuple[Path, dict[str, Path]]) -> None:
    """Outside pytest's capture, with decoding in worker processes: still one line per skipped file."""
    planted = messy[1]
    files = [planted[name] for name in ("decompression-bomb", "fifo", "truncated-jpeg", "very-wide", "16-bit-png")]
    proc = subprocess.run([sys.executable, "-m", "transferkit.cli", "classify", *map(str, files), "--top", "1"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert f"skipped {planted['decompression-bomb']}: too large" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 4  # three skipped files and the summary line
    assert f"{planted['very-wide']}:" in proc.stdout and f"{planted['16-bit-png']}:" in proc.stdout
