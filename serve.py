"""Thin entry point: `python serve.py ckpt_path=... [port=8000] [host=127.0.0.1]` (conf/serve.yaml)."""

from dialoglab.extras import exit_unless_installed

if __name__ == "__main__":
    exit_unless_installed("serve")  # before importing FastAPI: one line, not a traceback
    from dialoglab.chat.api import main

    main()
