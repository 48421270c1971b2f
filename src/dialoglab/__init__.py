"""dialoglab: train, compare and chat with conversational models."""

__version__ = "0.1.0"
