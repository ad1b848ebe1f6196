"""Run examples/tutorial.ipynb top to bottom and store it with its outputs (``make notebook``).

A code host shows a notebook's stored outputs, so the tutorial is kept executed. The run is a
short one, so re-running it takes minutes on a laptop: real MNIST (``MNISTKIT_DATA`` or the
cache; ``--dataset mnist-sample`` works offline), one epoch, two tuning trials. It runs in a
temporary folder, so the paths it prints are the notebook's own (``runs/tutorial/...``), and
execution timestamps are dropped, so a re-run changes only what really changed.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "examples" / "tutorial.ipynb"
#: the stored notebook stays small enough to read on a code host (its one image is the data grid)
MAX_BYTES = 200_000


def settings(args: argparse.Namespace) -> dict[str, str]:
    """The notebook's ``MNISTKIT_TUTORIAL_*`` environment (its first cell reads them)."""
    return {
        "MNISTKIT_TUTORIAL_DATASET": args.dataset,
        "MNISTKIT_TUTORIAL_EPOCHS": str(args.epochs),
        "MNISTKIT_TUTORIAL_TRIALS": str(args.trials),
        "MNISTKIT_TUTORIAL_LOG_EVERY": str(args.log_every),
    }


def execute(path: Path, env: dict[str, str], timeout: int):
    """The notebook at ``path``, executed in a fresh kernel in a temporary working folder."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="mnistkit-notebook-") as folder:
        nbclient.NotebookClient(
            nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": folder}}
        ).execute()
        tidy(nb, folder)
    return nb


def tidy(nb, folder: str) -> None:
    """Outputs as a reader should see them: paths relative to the notebook's folder, no execution
    timestamps, and no blank stream lines or warnings about this machine's Jupyter set-up
    (tqdm's "IProgress not found")."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)  # timestamps: noise in every diff
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.outputs:
            if output.get("output_type") == "stream":
                output["text"] = output["text"].replace(folder + os.sep, "")
                if not output["text"].strip() or (output["name"] == "stderr" and "Warning:" in output["text"]):
                    continue
            kept.append(output)
        cell.outputs = kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist", help="mnist (default) or mnist-sample (offline)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per training (default 1)")
    parser.add_argument("--trials", type=int, default=2, help="tuning trials in step 7 (default 2)")
    parser.add_argument("--log-every", type=int, default=300, help="steps between log lines (default 300)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds a cell may take (default 900)")
    parser.add_argument("--out", type=Path, default=NOTEBOOK, help="where to write (default: in place)")
    args = parser.parse_args(argv)

    import nbformat

    nb = execute(NOTEBOOK, settings(args), args.timeout)
    text = nbformat.writes(nb)
    if len(text.encode()) > MAX_BYTES:
        raise SystemExit(f"the executed notebook is {len(text.encode()):,} bytes (at most {MAX_BYTES:,}): not written")
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({len(text.encode()):,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
