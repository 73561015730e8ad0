"""From files to tensors: index a folder or CSV manifest (`files`), decode and set aside what cannot be used
(`images`, `scan`), split (`split`), preprocess as the backbone was trained (`preprocess`), and load batches
(`loaders`)."""
