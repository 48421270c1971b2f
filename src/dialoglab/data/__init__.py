"""Corpus readers, dialogue records, tokenizers and the DataModule."""
