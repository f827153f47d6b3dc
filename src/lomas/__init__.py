"""Lomas: remote, differentially private data science."""

__version__ = "0.1.0"
