"""A whole model as one ONNX graph: uint8 images (N, H, W, 3) in, class probabilities out, normalisation inside.
Made once per weights and cached (`graph`), run by ONNX Runtime (`session.OnnxClassifier`, what the commands and
the server use), chosen or passed over for PyTorch with the reason (`runner`), and written out for deployment
with its parity checked (`export`, `quantize`). `onnx` holds the two steps every graph goes through."""
