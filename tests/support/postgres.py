"""A throwaway PostgreSQL cluster started from the machine's server binaries.

As root (CI, these machines) the cluster runs as the ``postgres`` user, because initdb refuses
to run as root. Each test gets its own database, cloned from a template that already holds the
schema, so tests never see each other's rows.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.ports import free_port


def find_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    explicit = os.environ.get("BATCHD_PG_BIN")
    if explicit:
        candidates.insert(0, explicit)
    for candidate in candidates:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


@dataclass
class Cluster:
    bin_dir: Path
    data_dir: Path
    port: int
    user: str | None  # the OS user the server runs as, when we are root

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {done.stderr.decode(errors='replace')}")

    def start(self) -> None:
        self.data_dir.mkdir(parents=True)
        if self.user:
            record = pwd.getpwnam(self.user)
            os.chown(self.data_dir, record.pw_uid, record.pw_gid)
            os.chown(self.data_dir.parent, record.pw_uid, record.pw_gid)  # for server.log
        self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "--no-sync")
        options = (
            f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c full_page_writes=off"
        )
        log = str(self.data_dir.parent / "server.log")  # without -l the server holds our pipes open
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", log, "-w", "-t", "60", "start"
        )

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        name = f"t_{secrets.token_hex(6)}"
        psql = self.bin_dir / "psql"
        subprocess.run(
            [
                str(psql),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
                f'CREATE DATABASE "{name}"',
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return self.dsn(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def start_cluster(root: Path) -> Cluster:
    bin_dir = find_bin_dir()
    if bin_dir is None:
        raise FileNotFoundError("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    user = "postgres" if os.geteuid() == 0 else None
    base = root / f"pg-{secrets.token_hex(4)}"
    base.mkdir(parents=True)
    root.chmod(0o755)  # the postgres user must reach its data folder
    cluster = Cluster(bin_dir, base / "data", free_port(), user)
    cluster.start()
    return cluster
