"""Thin entry point: `streamlit run app.py` (the web chat; see dialoglab.chat.web)."""

from dialoglab.chat.web import main

main()
