"""The pretrained digit model shipped inside the package, so ``mnistkit predict photo.jpg`` works
with no training. Its weights are ``digits-cnn.safetensors`` beside this file; its model card
(training command, data, seed, accuracies) is in the checkpoint's own metadata.
"""

from __future__ import annotations

from pathlib import Path

from mnistkit.errors import CheckpointError

#: The shipped checkpoint's file name, inside this package folder.
MODEL_FILE = "digits-cnn.safetensors"


def bundled_model_path() -> Path:
    """Where the bundled checkpoint lies; a clear error when this install lacks it."""
    path = Path(__file__).with_name(MODEL_FILE)
    if not path.is_file():
        raise CheckpointError(
            f"this install has no bundled model ({path} is missing): give a checkpoint or run directory, "
            "or rebuild it with `make bundled-model`")
    return path
