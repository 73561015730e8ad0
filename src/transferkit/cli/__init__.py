"""The `transferkit` command line (`main`): a thin layer over the Python API."""
