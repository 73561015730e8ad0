"""Serving a trained model over HTTP: `transferkit serve`.

`classifier` (the protocol the server needs, and loading it from a run folder or an .onnx file), `app` (the
FastAPI app), `batcher` (dynamic batching), `uploads` (reading requests within limits), `metrics` (Prometheus
text), `page` (the web page), `settings` (the limits). This face imports no web framework and no torch: the
command line checks its arguments with it before anything heavy loads.
"""

from transferkit.serve.classifier import Classifier, check_model_path, load_classifier
from transferkit.serve.settings import ServeSettings

__all__ = ["Classifier", "ServeSettings", "check_model_path", "load_classifier"]
