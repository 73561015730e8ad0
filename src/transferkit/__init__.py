"""transferkit: transfer learning from a folder of images (or a file of texts).

    import transferkit as tk
    data = tk.load_images("photos/", val_split=0.2, seed=0)
    model = tk.TransferModel.from_pretrained("efficientnet_lite0", data.classes)  # base frozen, new head
    learner = tk.Learner(model, data)
    learner.fine_tune()                                  # probe, head, then the top blocks at lower rates
    model.save("runs/photos")

    result = tk.train_text("mail.csv", "runs/mail")      # texts: a sentence encoder, a head on its embeddings
    tk.predict_texts(result.model, ["WIN a FREE cruise!!!"])

Names are imported on first use (PEP 562), so `import transferkit` and the command line stay fast: torch, timm
and scikit-learn load only when something needs them. Nothing inside the package imports this module.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from transferkit._version import __version__

_WHERE = {
    "BACKBONES": "transferkit.backbones.table",
    "Backbone": "transferkit.model",
    "BackboneSpec": "transferkit.backbones.spec",
    "Bundle": "transferkit.io.bundle",
    "EXAMPLE_DATA": "transferkit.data.files",
    "Augmentation": "transferkit.data.preprocess",
    "Evaluation": "transferkit.evaluation.predict",
    "FeatureSet": "transferkit.features.cache",
    "HeadConfig": "transferkit.model",
    "ImageData": "transferkit.data.split",
    "LabelledFiles": "transferkit.data.files",
    "Learner": "transferkit.training.learner",
    "Metrics": "transferkit.evaluation.metrics",
    "OnnxClassifier": "transferkit.inference.session",
    "Predictions": "transferkit.evaluation.predict",
    "Preprocessing": "transferkit.data.preprocess",
    "Runtime": "transferkit.runtime",
    "TrainConfig": "transferkit.training.config",
    "TrainResult": "transferkit.training.run",
    "TransferClassifier": "transferkit.estimator",
    "TransferModel": "transferkit.model",
    "UserError": "transferkit.errors",
    "classify": "transferkit.evaluation.predict",
    "evaluate": "transferkit.evaluation.predict",
    "export_onnx": "transferkit.inference.export",
    "extract_features": "transferkit.features.extract",
    "format_metrics": "transferkit.evaluation.metrics",
    "get_backbone": "transferkit.backbones.registry",
    "load_bundle": "transferkit.io.bundle",
    "load_features": "transferkit.features.cache",
    "load_images": "transferkit.data.split",
    "load_labelled": "transferkit.data.files",
    "predict": "transferkit.evaluation.predict",
    "save_bundle": "transferkit.io.bundle",
    "train": "transferkit.training.strategies",
    # text, the second modality
    "LabelledTexts": "transferkit.text.data",
    "SentenceEncoder": "transferkit.text.encoder",
    "TEXT_ENCODERS": "transferkit.text.encoders",
    "TextConfig": "transferkit.text.config",
    "TextEncoderSpec": "transferkit.text.encoders",
    "TextModel": "transferkit.text.model",
    "evaluate_texts": "transferkit.text.evaluate",
    "load_text_bundle": "transferkit.text.bundle",
    "predict_texts": "transferkit.text.evaluate",
    "read_texts": "transferkit.text.data",
    "train_text": "transferkit.text.train",
}

__all__ = [
    "__version__", "Augmentation", "BACKBONES", "Backbone", "BackboneSpec", "Bundle", "EXAMPLE_DATA", "Evaluation",
    "FeatureSet", "HeadConfig", "ImageData", "LabelledFiles", "Learner", "Metrics", "OnnxClassifier", "Predictions",
    "Preprocessing", "Runtime", "TrainConfig", "TrainResult", "TransferClassifier", "TransferModel", "UserError",
    "classify", "evaluate", "export_onnx", "extract_features", "format_metrics", "get_backbone", "load_bundle",
    "load_features", "load_images", "load_labelled", "predict", "save_bundle", "train",
    "LabelledTexts", "SentenceEncoder", "TEXT_ENCODERS", "TextConfig", "TextEncoderSpec", "TextModel", "evaluate_texts",
    "load_text_bundle", "predict_texts", "read_texts", "train_text",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'transferkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # the next look-up is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from transferkit.backbones.registry import get_backbone
    from transferkit.backbones.spec import BackboneSpec
    from transferkit.backbones.table import BACKBONES
    from transferkit.data.files import EXAMPLE_DATA, LabelledFiles, load_labelled
    from transferkit.data.preprocess import Augmentation, Preprocessing
    from transferkit.data.split import ImageData, load_images
    from transferkit.errors import UserError
    from transferkit.estimator import TransferClassifier
    from transferkit.evaluation.metrics import Metrics, format_metrics
    from transferkit.evaluation.predict import Evaluation, Predictions, classify, evaluate, predict
    from transferkit.features.cache import FeatureSet, load_features
    from transferkit.features.extract import extract_features
    from transferkit.inference.export import export_onnx
    from transferkit.inference.session import OnnxClassifier
    from transferkit.io.bundle import Bundle, load_bundle, save_bundle
    from transferkit.model import Backbone, HeadConfig, TransferModel
    from transferkit.runtime import Runtime
    from transferkit.text.bundle import load_text_bundle
    from transferkit.text.config import TextConfig
    from transferkit.text.data import LabelledTexts, read_texts
    from transferkit.text.encoder import SentenceEncoder
    from transferkit.text.encoders import TEXT_ENCODERS, TextEncoderSpec
    from transferkit.text.evaluate import evaluate_texts, predict_texts
    from transferkit.text.model import TextModel
    from transferkit.text.train import train_text
    from transferkit.training.config import TrainConfig
    from transferkit.training.learner import Learner
    from transferkit.training.run import TrainResult
    from transferkit.training.strategies import train
