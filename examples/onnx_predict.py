"""Top-3 classes of image files with a model from `transferkit export`, using only onnxruntime, numpy and Pillow.

    python onnx_predict.py model.onnx photo1.jpg photo2.png

Decoding, resizing and cropping are transferkit's evaluation transform exactly: JPEGs decoded at a reduced
scale no smaller than the resize size, EXIF rotation applied, shorter side resized to `resize_size`, centre
crop of `input_size`. The graph does the rest (uint8 in, normalisation inside, probabilities out).
"""

import json
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
meta = session.get_modelmeta().custom_metadata_map
classes, prep = json.loads(meta["classes"]), json.loads(meta["preprocessing"])
size, crop = prep["resize_size"], prep["input_size"]


def load(path: str) -> np.ndarray:
    image = Image.open(path)
    image.draft("RGB", (size, size))  # JPEG only: decode at the smallest scale still >= size
    image = ImageOps.exif_transpose(image).convert("RGB")
    w, h = image.size
    scaled = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    image = image.resize(scaled, Image.Resampling[prep["interpolation"].upper()])
    left, top = round((image.width - crop) / 2), round((image.height - crop) / 2)
    return np.asarray(image.crop((left, top, left + crop, top + crop)))


paths = sys.argv[2:]
probs = session.run(None, {"images": np.stack([load(p) for p in paths])})[0]
for path, row in zip(paths, probs):
    top = np.argsort(-row, kind="stable")[:3]
    print(f"{path}: " + ", ".join(f"{classes[i]} {row[i]:.6f}" for i in top))
