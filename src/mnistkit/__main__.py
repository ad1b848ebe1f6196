"""``python -m mnistkit`` (and ``torchrun -m mnistkit``) runs the CLI."""

from mnistkit.cli import main

if __name__ == "__main__":
    main()
