"""Alembic, configured in code so the repository needs no top-level alembic.ini.

`python -m workers.runtime.eventlog.migrate [upgrade|check|revision -m MSG]`.
"""

from __future__ import annotations

import argparse
import fcntl
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url

MIGRATIONS = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation: a '%' in a password must be doubled.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["quiet"] = True
    return cfg


# Any constant shared by every process migrating the same PostgreSQL database.
_PG_LOCK_KEY = 0x766F6963  # "voic"


@contextmanager
def migration_lock(url: str) -> Iterator[None]:
    """Hold an exclusive, cross-process lock on migrating the database at `url`.

    Every worker migrates the log when it starts, and `just up` starts them together: two
    upgrades reading an empty version table at once both CREATE the tables and one dies.
    SQLite: a lock file beside the database (the database itself cannot be locked, the
    migration needs it). PostgreSQL: a session advisory lock, released with the connection.
    """
    from workers.runtime.eventlog.store import make_engine

    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if not u.database or u.database == ":memory:":
            yield  # private to this process: nothing to race with
            return
        path = Path(u.database)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".migrate-lock"), "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            yield
        return
    engine = make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            yield
    finally:
        engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    with migration_lock(url):
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
