"""Thin entry point: `streamlit run app.py [-- OVERRIDES]` (the web chat; see dialoglab.chat.web)."""

from dialoglab.extras import exit_unless_installed

exit_unless_installed("web")

from dialoglab.chat.web import main  # noqa: E402

main()
