"""Run the frozen base once and keep its features: the cache on disk and whether it is up to date (`cache`), what
made it, told without torch (`source`), the computation (`extract`) and the fastest engine to run the base with
(`engine`)."""
