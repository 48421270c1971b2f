"""Plain nn.Module building blocks: no Lightning, no Hydra, no file I/O beyond save/load."""
