"""A database fault as the command line says it: one line naming the database and what to do about it."""

from __future__ import annotations

from sqlalchemy.engine import make_url

from db.engine import sqlite_file
from flows.preflight import shown

_DRIVERS = ("sqlalchemy", "sqlite3", "psycopg", "psycopg2")


def database_error(exc: BaseException | None) -> BaseException | None:
    """The database driver's or SQLAlchemy's error in ``exc``'s chain (Prefect and our tasks wrap some)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.split(".")[0] in _DRIVERS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _sqlite_fix(text: str, path: str) -> str:
    if any(word in text for word in ("not a database", "malformed", "corrupt")):
        return (f"the file is damaged: move it aside (mv {path} {path}.broken) and run again; a new database is "
                "made, the outputs stay where they are")
    if "readonly" in text or "read-only" in text:
        return "it is read-only: make it and its folder writable, or give another --home"
    if "full" in text:
        return "the disk is full: free some space and run again (what was recorded is kept)"
    if "unable to open" in text:
        return "it cannot be opened: check that its folder exists and is writable"
    if "locked" in text:
        return "another process holds it locked: let that run finish, or stop it"
    return "check the file, or move it aside and run again"


def _server_fix(text: str, database: str | None) -> str:
    if "does not exist" in text and "database" in text:
        return f"create it (createdb {database}) or fix REFSR_DATABASE_URL"
    if "relation" in text and "does not exist" in text:
        return "its tables are gone (the database was dropped or replaced?): run again to create them afresh"
    if any(word in text for word in ("connection refused", "could not connect", "connection failed",
                                     "server closed", "terminating connection", "timeout", "no route")):
        return "the server is down or unreachable: start PostgreSQL (or fix REFSR_DATABASE_URL) and run again"
    if "password" in text or "authentication" in text:
        return "the server refused the login: fix the user or password in REFSR_DATABASE_URL"
    return "check the server and REFSR_DATABASE_URL, then run again"


def explain(exc: BaseException, url: str | None) -> str:
    """One line: which database, what it said, what to do (``url`` shown without its password)."""
    said = " ".join(str(getattr(exc, "orig", None) or exc).split()) or type(exc).__name__
    said = said.split(" [SQL:")[0].split(" (Background on this error")[0]
    text = said.lower()
    if url is None:
        return f"database error: {said}"
    path = sqlite_file(url)
    try:
        parsed = make_url(url)
        name, database = parsed.render_as_string(hide_password=True), parsed.database
    except Exception:  # noqa: BLE001 - an unparsable URL is still named, as given
        name, database = url, None
    fix = _sqlite_fix(text, str(path)) if path is not None else _server_fix(text, database)
    return f"database {shown(path if path is not None else name)}: {shown(said)}; {fix}"
