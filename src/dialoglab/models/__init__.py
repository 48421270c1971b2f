"""Models: plain nn.Module networks (components) and their training wrappers."""
