"""``trrg space``: serve the Gradio demo locally.

    trrg space --model runs/demo/model            # then open http://127.0.0.1:7860
    trrg space --model org/trrg --host 0.0.0.0    # a hub id from the local cache; exposed to the network

The command is the Space's own entry point, ``trrg.space.app.main``: a Hugging Face Space runs
``app.py`` by itself, so the app keeps its argument parsing and this module only names it.
"""

from trrg.space.app import main

__all__ = ["main"]
