"""Alembic, configured in code so the repository needs no top-level alembic.ini.

`python -m workers.runtime.eventlog.migrate [upgrade|check|revision -m MSG]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a '%' in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["quiet"] = True
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Raise if the models and the migrated database differ (alembic check)."""
    command.check(alembic_config(url))


def main(argv: list[str] | None = None) -> int:
    from workers.runtime.config import get_settings

    parser = argparse.ArgumentParser(description="Migrate the event log database.")
    parser.add_argument(
        "action", nargs="?", default="upgrade", choices=["upgrade", "check", "revision", "current"]
    )
    parser.add_argument("-m", "--message", default="change")
    parser.add_argument("--url", default=None, help="database URL (default: DATABASE_URL)")
    args = parser.parse_args(argv)
    url = args.url or get_settings().db_url
    from workers.runtime.eventlog.store import make_engine

    make_engine(url).dispose()  # creates the SQLite folder
    try:
        if args.action == "upgrade":
            upgrade(url)
            print(f"event log at {url} is at the latest schema")
        elif args.action == "check":
            check(url)
            print("no schema drift")
        elif args.action == "current":
            command.current(alembic_config(url), verbose=False)
        else:
            command.revision(alembic_config(url), message=args.message, autogenerate=True)
    except Exception as exc:
        print(f"error: migrating {url} failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
