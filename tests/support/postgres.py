"""A throwaway PostgreSQL (Debian's `postgresql` package) on a free port, for the run store.

Debian puts the server's programs in /usr/lib/postgresql/<version>/bin, off the PATH. The
server refuses to run as root: as root, the cluster belongs to the `postgres` user the
package creates, and the programs run as that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .processes import free_port

USER, PASSWORD, DATABASE = "textgen", "run-store-secret", "runs"


def _programs() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: `make test` installs it (apt-get "
                           "install postgresql)")
    return Path(versions[-1]).parent


class PostgresServer:
    """One cluster in a temporary folder; `stop()` and `start()` make an outage on demand."""

    def __init__(self) -> None:
        self.bin = _programs()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="textgen-pg-"))
        self.data = self.folder / "data"
        self.url = (f"postgresql+asyncpg://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{DATABASE}")
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str, input_: str | None = None) -> None:
        subprocess.run([*self._as_owner, *args], check=True, input=input_, text=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.folder)

    def create(self) -> None:
        password_file = self.folder / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_owner:
            shutil.chown(password_file, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "md5",
                  "--pwfile", str(password_file), "--no-sync")
        password_file.unlink()
        self.start()
        self._run("env", f"PGPASSWORD={PASSWORD}", str(self.bin / "createdb"), "-h", "127.0.0.1",
                  "-p", str(self.port), "-U", USER, DATABASE)

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-t", "30", "-l",
                  str(self.folder / "log"), "-o",
                  f"-p {self.port} -c listen_addresses=127.0.0.1 "
                  f"-c unix_socket_directories={self.folder} -c fsync=off", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-w", "-m", "fast", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.create()
        yield server
    finally:
        server.remove()

