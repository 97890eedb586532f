"""The commands of `poster-fast`, one thin module each (see cli.py for the interface)."""
