"""``python -m visionkit.cli``: the ``visionkit`` command."""

from visionkit.cli import main

if __name__ == "__main__":
    main()
