"""Entry points of keras-l2t (`python -m train.main`). Flags live here only."""
