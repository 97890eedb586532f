"""The version of poster_fast, the one source (pyproject.toml reads it as poster_fast.__version__)."""
__version__ = "0.1.0"
