"""A real, throw-away PostgreSQL server on loopback for the deployment tests.

``running_postgres()`` runs ``initdb`` into a fresh temporary folder, starts the server with
``pg_ctl`` on a free 127.0.0.1 port (its Unix socket inside that folder, nothing else
listening), creates a password-protected superuser and yields the connection parameters;
it stops the server and deletes the folder on exit.  TCP connections need the password
(scram-sha-256), so a test that connects proves the password travelled.

PostgreSQL refuses to run as root.  When the tests run as root (CI here does), the server
and ``initdb`` run as an unprivileged system user (``postgres`` when the package created it,
else ``nobody``) through ``subprocess``'s ``user=``/``group=``; the temporary folder is
created in the system temp dir and handed to that user.  Without ``initdb``/``pg_ctl`` (on
``PATH`` or under ``/usr/lib/postgresql/*/bin``) :func:`postgres_binaries` returns ``None``
and the callers skip with the reason.
"""

from __future__ import annotations

import contextlib
import glob
import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Unprivileged accounts tried, in order, when the tests run as root.
SERVER_USERS = ("postgres", "nobody")


@dataclass(frozen=True)
class PostgresServer:
    """Connection parameters of a running server (TCP on loopback, password auth)."""

    host: str
    port: int
    user: str
    password: str
    socket_dir: Path
    data_dir: Path
    bin_dir: Path
    run_as: str | None

    def env(self, db: str) -> dict[str, str]:
        """The ``DAGSTER_PG_*`` variables that ``deploy/dagster-postgres.yaml`` reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USER": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": db,
        }

    def url(self, db: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (over TCP, with the password) and return its name."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def query(self, db: str, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user,
                                password=self.password, dbname=db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


def postgres_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None`` when they are not installed."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(Path(d) / "initdb", os.X_OK) and os.access(Path(d) / "pg_ctl", os.X_OK):
            return Path(d)
    return None


def _server_user() -> str | None:
    """``None`` when not root (run as ourselves), else the first unprivileged account found."""
    if os.geteuid() != 0:
        return None
    for name in SERVER_USERS:
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError(f"running as root and none of the users {SERVER_USERS} exists to run PostgreSQL")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], run_as: str | None, timeout: float) -> None:
    kw = {}
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        kw = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd="/", **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:2])} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


@contextlib.contextmanager
def running_postgres(user: str = "cellscape") -> Iterator[PostgresServer]:
    """Start a private PostgreSQL server on 127.0.0.1 and stop it (and delete its files) on exit.

    Parameters
    ----------
    user : str
        The superuser to create; its random password is in the yielded parameters.

    Yields
    ------
    PostgresServer
        Host, port, user and password for TCP connections; the server's own folders.

    Raises
    ------
    RuntimeError
        When the binaries are missing (check :func:`postgres_binaries` first) or the server
        does not start; the message carries the server log's tail.
    """
    bin_dir = postgres_binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    run_as = _server_user()
    root = Path(tempfile.mkdtemp(prefix="cellscape-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    password = secrets.token_hex(16)
    pwfile = root / "pwfile"
    pwfile.write_text(password + "\n")
    if run_as is not None:
        entry = pwd.getpwnam(run_as)
        for p in (root, sock, pwfile):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        grp.getgrgid(entry.pw_gid)  # fails loudly on a user without a group
    started = False
    try:
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}",
              "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C",
              "--no-sync"], run_as, timeout=120)
        pwfile.unlink()
        last_error = None
        for _ in range(3):  # a free port can be taken between the probe and the bind: retry
            port = _free_port()
            opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sock} "
                    "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                      "-o", opts, "start"], run_as, timeout=90)
                started = True
                break
            except RuntimeError as e:
                last_error = f"{e}\n{log.read_text() if log.exists() else ''}"[-4000:]
        if not started:
            raise RuntimeError(f"PostgreSQL did not start:\n{last_error}")
        yield PostgresServer(host="127.0.0.1", port=port, user=user, password=password,
                             socket_dir=sock, data_dir=data, bin_dir=bin_dir, run_as=run_as)
    finally:
        if started:
            with contextlib.suppress(Exception):
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], run_as, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
