"""Run the frozen base once and keep its features: the cache on disk (`cache`), the computation (`extract`) and
the fastest engine to run the base with (`engine`)."""
