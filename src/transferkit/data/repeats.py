"""Samples to leave out because they repeat another: a path listed twice, or a file with the same bytes as an
earlier one (kept once; a copy in another class is a leak between classes). Plain bookkeeping over paths and
content hashes, no decoding: training (`scan`) and the feature cache (`features.cache`) share it."""

from __future__ import annotations

import os

from transferkit.data.files import LabelledFiles

__all__ = ["LEAK", "copy_reasons", "duplicate_reasons", "repeated_files"]


def duplicate_reasons(files: LabelledFiles) -> dict[int, str]:
    """The second and later listings of one file (by real path) -- e.g. a CSV giving it two labels."""
    first_label: dict[str, int] = {}
    reasons: dict[int, str] = {}
    for index, sample in enumerate(files.samples):
        key = os.path.realpath(sample.path)
        if key in first_label:
            classes = (files.classes[first_label[key]], files.classes[sample.label])
            reasons[index] = f"listed twice (classes {classes[0]} and {classes[1]})"
        else:
            first_label[key] = sample.label
    return reasons


LEAK = "a leak between classes"


def repeated_files(files: LabelledFiles, digests: dict[int, str]) -> dict[int, str]:
    """Why to leave out a sample: its path listed before, or its content (sha256 in `digests`) seen before."""
    return copy_reasons(files, digests) | duplicate_reasons(files)


def copy_reasons(files: LabelledFiles, digests: dict[int, str]) -> dict[int, str]:
    """Files with the same bytes as an earlier one are kept once (the first, in class then path order).

    A copy in the same class would only weigh double, and could land in both the training and the validation
    split; a copy in another class teaches two labels for one picture. The second case is called a leak."""
    first: dict[str, int] = {}
    reasons: dict[int, str] = {}
    for index in sorted(digests):
        original = first.setdefault(digests[index], index)
        if original == index:
            continue
        here, there = files.samples[index], files.samples[original]
        if here.label == there.label:
            reasons[index] = f"same content as {there.path} (a duplicate; kept once)"
        else:
            reasons[index] = (f"same content as {there.path} of class {files.classes[there.label]}: {LEAK} "
                              f"(kept once, in {files.classes[there.label]}); remove the wrong copy")
    return reasons
