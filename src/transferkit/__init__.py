"""transferkit: transfer learning from a folder of images."""

__version__ = "0.1.0"
