"""From files to tensors: index a folder or CSV manifest (`files`), decode and set aside what cannot be used
(`images`, `scan`, `repeats`), split (`split`), preprocess as the backbone was trained (`preprocess`: the values,
no torch; `transforms`: the torchvision transforms built from them), and load batches (`loaders`)."""
