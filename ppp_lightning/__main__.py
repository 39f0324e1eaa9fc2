"""``python -m ppp_lightning``: the ``ppp-lightning`` command (see :func:`ppp_lightning.lightning.cli.main`)."""

from ppp_lightning.lightning.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
