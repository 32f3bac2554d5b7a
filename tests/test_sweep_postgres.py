"""Two sweep commands ("two machines": separate --out folders) share one study on a real, throwaway
PostgreSQL server: every grid point runs exactly once between them. The storage password appears in no
message, no file and no worker's command line.

The server: initdb + pg_ctl on a temporary folder, listening on 127.0.0.1 on a free port, password
authentication (scram-sha-256) for TCP connections. initdb
refuses to run as root, so as root it runs as the ``postgres`` user (created by Debian's package,
which ``make install`` installs). When the server cannot start the test is skipped, or fails when
CI=true.
"""

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from spikestab.sweep import report
from spikestab.sweep.space import params_key
from spikestab.sweep.storage import masked, open_storage
from spikestab.sweep.worker import STORAGE_ENV, WorkerContext, worker_launch
from sweep_tiny import cli_args

PASSWORD = "Pw-7f3a9c2e-secret"  # the throwaway server's; looked for in every output of the tests


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return candidates[-1] if candidates else None


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL test server cannot start on CI: {reason}")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """postgresql://spikestab:PASSWORD@127.0.0.1:PORT/postgres on a fresh server, removed afterwards."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[sweeps]')")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        _unavailable("initdb / pg_ctl not found (apt-get install postgresql)")
    prefix: list[str] = []
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no 'postgres' user for initdb")
        runuser = shutil.which("runuser")
        prefix = [runuser, "-u", "postgres", "--"] if runuser else ["su", "postgres", "-s", "/bin/sh", "-c"]
    root = Path(tempfile.mkdtemp(prefix="spikestab-pg-"))
    if prefix:
        shutil.chown(root, "postgres")

    def as_owner(args: list[str]) -> subprocess.CompletedProcess:
        cmd = prefix + ([" ".join(args)] if prefix[:1] == ["su"] else args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    port = _free_port()
    data = root / "data"
    started = False
    pwfile = root / "password"
    pwfile.write_text(PASSWORD + "\n")
    if prefix:
        shutil.chown(pwfile, "postgres")
    auth = ["--auth-local", "trust", "--auth-host", "scram-sha-256", f"--pwfile={pwfile}"]
    try:
        done = as_owner([initdb, "-D", str(data), *auth, "-U", "spikestab", "-E", "UTF8", "--no-sync"])
        if done.returncode != 0:
            _unavailable(f"initdb failed: {done.stderr.strip()[-500:]}")
        done = as_owner(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"'-h 127.0.0.1 -p {port} -k {root} -F'"
                if prefix[:1] == ["su"]
                else f"-h 127.0.0.1 -p {port} -k {root} -F",
                "start",
            ]
        )
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            _unavailable(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {log[-300:]}")
        started = True
        yield f"postgresql://spikestab:{PASSWORD}@127.0.0.1:{port}/postgres"
    finally:
        if started:
            as_owner([pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def _files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_two_machines_share_one_postgres_sweep(tmp_path, postgres_url):
    """Machine a gives the password in PGPASSWORD (what docs/sweeps.md advises), machine b in the URL
    and runs two worker processes, which receive the URL in their environment."""
    grid = ["--grid", "threshold=0.5,1.0", "--grid", "seed=0,1"]
    outs = [tmp_path / "machine-a" / "sweep", tmp_path / "machine-b" / "sweep"]
    urls = [postgres_url.replace(f":{PASSWORD}@", "@"), postgres_url]
    envs = [{**os.environ, "PGPASSWORD": PASSWORD}, dict(os.environ)]
    extra = [[], ["--workers", "2"]]
    cmds = [
        [
            sys.executable,
            "-m",
            "spikestab.cli",
            "sweep",
            "--out",
            str(out),
            "--storage",
            url,
            "--study",
            "shared",
            "--heartbeat",
            "2",
            *more,
            *grid,
            *cli_args(),
        ]
        for out, url, more in zip(outs, urls, extra)
    ]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        for cmd, env in zip(cmds, envs)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs

    storage = open_storage(postgres_url)
    assert storage.engine.dialect.driver == "psycopg"  # psycopg 3, the sweeps extra's driver
    study = optuna.load_study(study_name="shared", storage=storage)
    trials = study.get_trials()
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({params_key(t.params) for t in trials}) == 4
    runs = [run for out in outs for run in (out / "trials").glob("*") if (out / "trials").exists()]
    assert sorted(r.name for r in runs) == sorted(t.user_attrs["setting"] for t in trials)  # none twice
    for t in trials:
        run = Path(t.user_attrs["run_dir"])
        assert json.loads((run / "results.json").read_text())["val"]["accuracy"] == t.value
    starts = sum(log.count("[sweep] start") for log in logs)
    assert starts == 4, logs

    data = report(outs[0], storage=postgres_url, study_name="shared")
    assert data["counts"]["complete"] == 4 and [s["n"] for s in data["settings"]] == [2, 2]
    assert not any(PASSWORD in log for log in logs) and PASSWORD not in json.dumps(data, default=str)
    assert _files_holding(tmp_path, PASSWORD) == []
    assert "spikestab:***@127.0.0.1" in json.loads((outs[1] / "sweep.json").read_text())["storage"]


def test_a_wrong_password_is_refused_with_the_password_masked(postgres_url):
    wrong = postgres_url.replace(PASSWORD, "Wrong-Pw-4711")
    with pytest.raises(ValueError) as err:
        open_storage(wrong)
    message = str(err.value)
    assert "password authentication failed" in message and "spikestab:***@127.0.0.1" in message, message
    assert "Wrong-Pw-4711" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://sweeper:Pw-99@host:notaport/sweeps",  # does not parse (port)
        "postgresq://sweeper:Pw-99@host/sweeps",  # unknown dialect
        "postgresql://sweeper:Pw-99@127.0.0.1:1/sweeps",  # no server there
        "postgresql://sweeper@127.0.0.1:1/sweeps?password=Pw-99",
        "postgresql://sweeper:Pw@99/x@127.0.0.1:1/sweeps",  # unescaped @ and / in the password: refused
    ],
)
def test_the_password_of_a_url_that_cannot_be_opened_is_masked(url):
    with pytest.raises(ValueError, match=r"^--storage '[^']*\*\*\*[^']*'") as err:
        open_storage(url)
    assert "Pw" not in str(err.value) and "99" not in str(err.value), str(err.value)
    assert "Pw" not in masked(url) and "99" not in masked(url)


def test_worker_processes_get_the_storage_url_in_their_environment_not_their_command_line(tmp_path):
    url = "postgresql://sweeper:Pw-99@dbhost:5432/sweeps"
    ctx = WorkerContext(storage=url, study="s", out=str(tmp_path), plan={})
    command, env = worker_launch(ctx)
    assert not any("Pw-99" in arg for arg in command)
    assert env == {STORAGE_ENV: url}
    assert "storage" not in json.loads(command[-1])
