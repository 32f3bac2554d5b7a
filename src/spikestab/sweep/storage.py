"""Optuna RDB storage for sweeps: opening a URL (a clear error when it cannot be reached), heartbeats,
stale-trial retry, and handing out waiting trials so that no trial is run twice.

Only plain Optuna tables are used, so ``optuna-dashboard URL`` opens a sweep as it is.

SQLite note: Optuna's own pop of a waiting trial reads the state, then writes RUNNING; PostgreSQL
locks the row in between (``SELECT ... FOR UPDATE``), SQLite does not, and concurrent processes then
pop the same trial (measured: 4 processes popped 69 times from 60 waiting trials). So for SQLite,
:func:`pop_trial` holds an exclusive file lock beside the database while it pops: local workers
(the only ones a SQLite file can serve) never start the same trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import sqlite3
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState

DB_NAME = "sweep.db"
SWEEP_JSON = "sweep.json"  # the sweep's definition, beside its database (written by study.write_sweep_json)
MAX_RETRY = 3  # a trial whose worker died is retried this many times (then it stays FAIL)


def default_url(out: str | Path) -> str:
    """The sweep's own SQLite file: ``OUT/sweep.db``."""
    return f"sqlite:///{(Path(out).resolve() / DB_NAME)}"


def _credentials(url: str) -> tuple[int, int] | None:
    """Where the password of ``url`` starts and ends: after the user name's ``:`` up to the last ``@``
    (no URL parser: a URL that does not parse, or a password holding ``@`` or ``/``, hides as much)."""
    start = url.find("://") + 3 if "://" in url else 0
    end = url.rfind("@")
    colon = url.find(":", start, end)
    return None if end < start or colon < 0 else (colon + 1, end)


def masked(url: str) -> str:
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``, for every
    message, log line and file; it needs no parsable URL."""
    span = _credentials(url)
    if span is not None:
        url = url[: span[0]] + "***" + url[span[1] :]
    return re.sub(r"(password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def _scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's message) with the password of ``url`` replaced by ``***`` wherever it occurs."""
    span = _credentials(url)
    secrets = [url[span[0] : span[1]]] if span else []
    secrets += re.findall(r"password=([^&]*)", url, flags=re.IGNORECASE)
    for secret in filter(None, secrets):
        text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def _check_password_escaped(url: str) -> None:
    """ValueError when the password of ``url`` holds an unescaped ``@`` or ``/``: SQLAlchemy would end the
    password there and take the rest for the host (and connect to it)."""
    span = _credentials(url)
    if span is None:
        return
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url).password
    except Exception:  # opening it fails and says so, masked
        return
    if parsed is not None and str(parsed) != unquote(url[span[0] : span[1]]):
        raise ValueError(
            f"--storage {masked(url)!r}: its password holds an unescaped '@' or '/'; percent-encode them "
            "(@ as %40, / as %2F) or leave the password out of the URL and set PGPASSWORD"
        )


def engine_url(url: str) -> str:
    """The URL SQLAlchemy is given: ``postgresql://`` names psycopg 3 (the ``sweeps`` extra's driver)
    whatever SQLAlchemy's default driver is; every other URL as given."""
    return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url


def _sqlite_path(url: str) -> Path | None:
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database)


def check_sqlite_file(path: Path) -> None:
    """ValueError naming ``path`` when the SQLite sweep database there is damaged (truncated, overwritten:
    SQLite's quick check fails) or holds no Optuna tables (emptied) while the ``sweep.json`` beside it
    records a sweep started there. Only reads (a read-write connection all the same: a writer killed in
    a transaction leaves a hot journal, which only a writable connection rolls back; read-only, SQLite
    reports such an intact database as unwritable)."""
    size = path.stat().st_size
    try:
        with contextlib.closing(sqlite3.connect(path, timeout=120)) as con:
            check = con.execute("PRAGMA quick_check").fetchall()
            tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:
        check, tables = [(str(err),)], set()
    remedy = (
        f"restore it from a copy, or move it away to record the sweep anew (the runs under "
        f"{path.parent / 'trials'} are reused, each resumed from its checkpoint)"
    )
    if check != [("ok",)]:
        detail = "; ".join(str(r[0]) for r in check[:3])
        raise ValueError(f"the sweep database {path} is damaged ({detail}; {size} bytes): {remedy}")
    record = path.parent / SWEEP_JSON
    if "studies" not in tables and record.is_file():
        what = "is empty (0 bytes)" if size == 0 else "holds no Optuna tables"
        raise ValueError(
            f"the sweep database {path} {what}, but {record} records a sweep started there, so the database "
            f"was emptied or replaced: {remedy}"
        )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Optuna flags heartbeats and fail_stale_trials as experimental; the docs say so once instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def check_heartbeat(heartbeat: int, grace: int | None) -> int:
    """The grace period (default 4 heartbeats); ValueError for values Optuna cannot use."""
    if not isinstance(heartbeat, int) or isinstance(heartbeat, bool) or heartbeat < 1:
        raise ValueError(f"--heartbeat must be an integer >= 1 (seconds), got {heartbeat!r}")
    grace = 4 * heartbeat if grace is None else grace
    if not isinstance(grace, int) or isinstance(grace, bool) or grace <= heartbeat:
        raise ValueError(f"--grace must be an integer > --heartbeat ({heartbeat}), got {grace!r}")
    return grace


def open_storage(url: str, heartbeat: int = 30, grace: int | None = None) -> RDBStorage:
    """An RDBStorage with heartbeats every ``heartbeat`` s; a RUNNING trial silent for ``grace`` s
    (default 4 heartbeats) is failed and re-queued (up to MAX_RETRY times) by the next worker that
    looks. A URL that cannot be opened is a ValueError naming ``--storage``."""
    grace = check_heartbeat(heartbeat, grace)
    _check_password_escaped(url)
    engine: dict = {}
    path = _sqlite_path(url)
    if url.startswith("sqlite"):
        engine = {"connect_args": {"timeout": 120}}  # wait for other workers' writes, not "database is locked"
        if path is not None and not path.parent.is_dir():
            raise ValueError(f"--storage {url!r}: folder {str(path.parent)!r} does not exist")
        if path is not None and path.exists():
            check_sqlite_file(path)
    elif url.startswith("postgresql") or url.startswith("mysql"):
        engine = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    failure: Exception | None = None
    for attempt in range(6):
        try:
            with _quiet():
                return RDBStorage(
                    engine_url(url),
                    engine_kwargs=engine,
                    heartbeat_interval=heartbeat,
                    grace_period=grace,
                    heartbeat_stale_trial_callback=_retry_callback(),
                )
        except (IntegrityError, ProgrammingError) as err:
            # two workers creating Optuna's tables in a new database at once: one wins, the other retries
            failure = err
            time.sleep(0.2 * (attempt + 1))
        except Exception as err:  # sqlalchemy / driver errors of many kinds: one clear message
            failure = err
            break
    detail = _scrubbed(str(failure).strip().splitlines()[0] if str(failure).strip() else "", url)
    hint = _driver_hint(failure)
    raise ValueError(f"--storage {masked(url)!r} cannot be opened ({type(failure).__name__}: {detail}){hint}") from None


def _driver_hint(failure: Exception | None) -> str:
    """What is missing and how to install it, when the database driver cannot be imported."""
    if not isinstance(failure, ImportError):
        return ""
    return (
        f"; {failure.__cause__ or failure}: install the database driver (pip install 'spikestab[sweeps]' "
        "installs psycopg 3, which postgresql:// URLs use)"
    )


def _retry_callback():
    cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) or optuna.storages.RetryFailedTrialCallback
    with _quiet():
        return cls(max_retry=MAX_RETRY)


def requeue(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue a failed trial again with its parameters (as the stale-trial callback does)."""
    with _quiet():
        _retry_callback()(study, trial)


@contextlib.contextmanager
def queue_lock(url: str) -> Iterator[None]:
    """Exclusive lock around popping a trial: a file lock beside a SQLite file, nothing for servers
    whose row locks already make the pop atomic."""
    path = _sqlite_path(url)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def fail_stale(study: optuna.Study) -> None:
    """Fail RUNNING trials whose heartbeat stopped (their callback re-queues them)."""
    with _quiet():
        optuna.storages.fail_stale_trials(study)


def pop_trial(study: optuna.Study, storage: RDBStorage, url: str) -> tuple[optuna.Trial, int] | None:
    """Move one WAITING trial to RUNNING and return it and its id (its heartbeat recorded), or None
    when none is waiting. Never creates a trial and never hands one trial to two workers."""
    study_id = storage.get_study_id_from_name(study.study_name)
    with queue_lock(url):
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, frozen.number)
            # heartbeat first: a worker dying right after taking the trial leaves it RUNNING *with* a
            # heartbeat, which goes stale (Optuna never fails a RUNNING trial that has none)
            storage.record_heartbeat(trial_id)
            try:
                if not storage.set_trial_state_values(trial_id, state=TrialState.RUNNING):
                    continue
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
            return optuna.Trial(study, trial_id), trial_id
    return None


class Heartbeat:
    """Records a trial's heartbeat every interval in a daemon thread while the ``with`` block runs."""

    def __init__(self, storage: RDBStorage, trial_id: int) -> None:
        self.storage, self.trial_id = storage, trial_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval() or 30
        while not self._stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup: try again next beat; staleness is judged on grace
                pass

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
