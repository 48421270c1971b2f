"""Corpus readers: each turns one on-disk corpus format into `Dialogue` records and `ReadStats`.

- `cornell.CornellReader`: Cornell Movie-Dialogs (original release or ConvoKit jsonl).
- `chatterbot.ChatterbotReader`: the YAML files of the `chatterbot-corpus` package.
- `persona_jsonl.PersonaJsonlReader`: persona-conditioned jsonl (persona + reply or turns).
"""
