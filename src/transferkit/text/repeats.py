"""Texts to leave out because they repeat an earlier one, as `data.repeats` does for image files: a copy in the
same class is a duplicate (kept once: it would only weigh double, and could land in both the training and the
validation split), a copy in another class is a leak between classes (one text taught two labels). Texts that
differ only in white space are the same text to every tokenizer, so they count as copies."""

from __future__ import annotations

from transferkit.data.repeats import LEAK
from transferkit.text.data import LabelledTexts

__all__ = ["LEAK", "repeated_texts"]


def repeated_texts(data: LabelledTexts) -> dict[int, str]:
    """Why to leave out each text that repeats an earlier one (index -> reason); the first copy is kept."""
    first: dict[str, int] = {}
    reasons: dict[int, str] = {}
    for index, text in enumerate(data.texts):
        original = first.setdefault(" ".join(text.split()), index)
        if original == index:
            continue
        here, there = int(data.labels[index]), int(data.labels[original])
        if here == there:
            reasons[index] = f"same text as {data.origins[original]} (a duplicate; kept once)"
        else:
            kept = data.classes[there]
            reasons[index] = (f"same text as {data.origins[original]} of class {kept}: {LEAK} (kept once, in "
                              f"{kept}); remove the wrong copy")
    return reasons
