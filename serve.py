"""Thin entry point: `python serve.py ckpt_path=... [port=8000] [host=127.0.0.1]` (conf/serve.yaml)."""

from dialoglab.chat.api import main

if __name__ == "__main__":
    main()
