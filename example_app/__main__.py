"""``python -m example_app``: apply the example app's migrations and report them."""

from __future__ import annotations

import sys

from flask.cli import FlaskGroup

from .app import create_app


def main() -> None:
    """Run ``flask --app example_app.app:create_app safe-migrate [ARGS]``."""
    cli = FlaskGroup(create_app=create_app)
    cli.main(args=["safe-migrate", *sys.argv[1:]], prog_name="python -m example_app")


if __name__ == "__main__":
    main()
