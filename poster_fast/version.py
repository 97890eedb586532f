"""The version of poster_fast, the one source: pyproject.toml reads it here and
poster_fast.__version__ hands it on."""
__version__ = "0.1.0"
