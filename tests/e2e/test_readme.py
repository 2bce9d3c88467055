"""The README's quickstart works as written: its commands, run by a shell against a real batchd."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.e2e.conftest import REPO_ROOT, ModelServer, ServerFactory

MODEL = "all-MiniLM-L6-v2"  # what examples/embeddings.jsonl asks for; the fake answers any model


def quickstart_commands() -> list[str]:
    """The command lines of the ``sh`` blocks under the README's Quickstart heading."""
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    lines = [line.split("  #", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line]


def extras_named(command: str) -> list[str]:
    """``pip install -e '.[a,b]'`` → ``["a", "b"]``."""
    found = re.search(r"\.\[([\w,-]+)\]", " ".join(shlex.split(command)))
    return found.group(1).split(",") if found else []


def test_the_quickstart_runs_as_written(
    start_server: ServerFactory, model_server: ModelServer, tmp_path: Path
) -> None:
    """Each quickstart command exits 0 against a batchd on another port, found through
    OPENAI_BASE_URL; a ``pip install`` names extras that exist and bring the examples' imports
    (the test environment has them installed already)."""
    server = start_server("--upstream", f"{MODEL}@{model_server.base_url}", upstream=False)
    (tmp_path / "examples").symlink_to(REPO_ROOT / "examples")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "BATCHD_"))}
    env |= {"OPENAI_BASE_URL": server.base_url, "PATH": bin_dir + os.pathsep + env["PATH"]}
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    commands = quickstart_commands()
    assert any("examples/embeddings_batch.py" in command for command in commands)
    for command in commands:
        if command.startswith("pip install"):
            named = extras_named(command)
            assert named and all(extra in extras for extra in named), command
            continue
        done = subprocess.run(
            command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if "embeddings_batch.py" in command:
            assert "completed" in done.stdout and " ~ " in done.stdout


def test_the_examples_extra_brings_the_sdk() -> None:
    """``pip install -e '.[examples]'`` installs what examples/ imports."""
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(requirement.startswith("openai") for requirement in extras["examples"])
    source = (REPO_ROOT / "examples" / "embeddings_batch.py").read_text()
    assert "from openai import OpenAI" in source
