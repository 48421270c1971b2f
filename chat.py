"""Thin entry point: `python chat.py ckpt_path=... [decoding=beam] [--once "text"]` (conf/chat.yaml)."""

from dialoglab.chat.cli import main

if __name__ == "__main__":
    main()
