"""The pretrained models shipped inside the package, so ``mnistkit predict photo.jpg`` works with
no training: where their files lie and the commands that make them. The digit model's weights are
``digits-cnn.safetensors`` beside this file; its model card (:mod:`mnistkit.card`: training command,
data, seed, accuracies, calibration) is in the checkpoint's own metadata under ``"card"``, so the
card can never drift from the weights it describes (the digest covers both).

Nothing here reads a checkpoint: :func:`mnistkit.checkpoint.load_checkpoint` (``None``: the bundled
model) asks this module where the file is.
"""

from __future__ import annotations

from pathlib import Path

from mnistkit.errors import CheckpointError

#: The shipped checkpoint's file name, inside this package folder.
MODEL_FILE = "digits-cnn.safetensors"
#: The preset whose recipe trains the shipped model; the card's ``command`` names it.
PRESET = "digits-bundled"
#: The exact command that trains it (``make bundled-model`` runs it, then packages the result).
TRAIN_COMMAND = f"mnistkit train --preset {PRESET}"
#: The shipped line reader (:mod:`mnistkit.reading`), its preset and the command that trains it
#: (``make bundled-reader`` runs it, chooses its unsure threshold, then packages the result).
LINE_MODEL_FILE = "digit-lines-crnn.safetensors"
LINE_PRESET = "lines-bundled"
LINE_TRAIN_COMMAND = f"mnistkit train --preset {LINE_PRESET}"
#: Each shipped file must stay small enough to live in a wheel.
MAX_BYTES = 2 * 1024 * 1024


def bundled_model_path() -> Path:
    """Where the bundled digit model lies; a clear error when this install lacks it."""
    return _shipped(MODEL_FILE, "model", "a checkpoint or run directory", "bundled-model")


def bundled_line_model_path() -> Path:
    """Where the bundled line reader lies; a clear error when this install lacks it."""
    return _shipped(LINE_MODEL_FILE, "line reader", "a line checkpoint (--model RUN)", "bundled-reader")


def _shipped(file_name: str, what: str, instead: str, target: str) -> Path:
    path = Path(__file__).with_name(file_name)
    if not path.is_file():
        raise CheckpointError(
            f"this install has no bundled {what} ({path} is missing): give {instead}, "
            f"or rebuild it with `make {target}`"
        )
    return path
