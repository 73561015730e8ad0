"""transferkit: transfer learning from a folder of images.

    import transferkit as tk
    data = tk.load_images("photos/", val_split=0.2, seed=0)
    model = tk.TransferModel.from_pretrained("efficientnet_lite0", list(data.classes))  # base frozen, new head
    learner = tk.Learner(model, data)
    learner.probe()                                      # warm start: head fitted on frozen features
    learner.fit(epochs=4, lr=1e-3)                       # stage 1: the head, with augmentation
    model.unfreeze_top(2)
    learner.fit(epochs=4, lr=3e-4, base_lr=1e-4)         # stage 2: lower, per-block rates
"""

__version__ = "0.1.0"

from transferkit.backbones import BACKBONES, BackboneSpec, get_backbone
from transferkit.bundle import load_bundle, save_bundle
from transferkit.config import TrainConfig
from transferkit.data import LabelledFiles, load_labelled
from transferkit.errors import UserError
from transferkit.features import FeatureSet, extract_features, load_features
from transferkit.learner import ImageData, Learner
from transferkit.metrics import Metrics, format_metrics
from transferkit.model import HeadConfig, TransferModel
from transferkit.preprocess import Augmentation, Preprocessing
from transferkit.workflow import EXAMPLE_DATA, classify, evaluate, load_images, predict, train

__all__ = [
    "BACKBONES", "EXAMPLE_DATA", "Augmentation", "BackboneSpec", "FeatureSet", "HeadConfig", "ImageData",
    "LabelledFiles", "Learner", "Metrics", "Preprocessing", "TrainConfig", "TransferModel", "UserError",
    "__version__", "classify", "evaluate", "extract_features", "format_metrics", "get_backbone", "load_bundle",
    "load_features", "load_images", "load_labelled", "predict", "save_bundle", "train",
]
