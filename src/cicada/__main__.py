"""``python -m cicada`` and the ``cicada`` console script."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from cicada.cli import main as cli_main

    sys.exit(cli_main(argv))


if __name__ == "__main__":
    main()
