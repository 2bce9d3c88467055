"""Why a client command stopped, each with its exit code.

    BatchdError (batchd.errors)
     └── ClientError              a client command could not do what was asked
          ├── ServerError         the server answered with an error (the OpenAI envelope)
          ├── Unreachable         no answer from the base URL
          ├── LocalFileError      a local file could not be read or written
          ├── NotFinished         results asked of a batch that is still running
          └── Detached            Ctrl-C: stopped watching, the batch keeps running

Each class's docstring is its default message.
"""

from __future__ import annotations

from typing import Any

from batchd.client.exits import ExitCode
from batchd.errors import BatchdError


class ClientError(BatchdError):
    """The command failed."""

    exit_code = ExitCode.ERROR
    label = "error"  # how the message starts on stderr
    kind = "client_error"  # the ``type`` of its ``--json`` error object

    def details(self) -> dict[str, Any]:
        """The error as an OpenAI-style error object, for ``--json``."""
        return {"message": self.message, "type": self.kind, "param": None, "code": None}


class ServerError(ClientError):
    """The server answered with an error."""

    def __init__(
        self,
        status_code: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type
        self.code = code
        self.param = param
        self.request_id = request_id

    def details(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}

    def restated(self, message: str) -> ServerError:
        """The same answer, explained by ``message``."""
        return ServerError(
            self.status_code,
            message,
            type=self.type,
            code=self.code,
            param=self.param,
            request_id=self.request_id,
        )


class Unreachable(ClientError):
    """The server could not be reached."""

    exit_code = ExitCode.UNREACHABLE
    kind = "connection_error"

    def __init__(self, base_url: str, reason: str) -> None:
        super().__init__(f"Cannot reach the server at {base_url}: {reason}.")
        self.base_url = base_url


class LocalFileError(ClientError):
    """A local file could not be read or written."""

    kind = "local_file_error"

    @classmethod
    def of(cls, verb: str, path: object, exc: OSError) -> LocalFileError:
        return cls(f"Cannot {verb} {path}: {exc.strerror or exc}.")


class NotFinished(ClientError):
    """The batch has not finished; it has no results yet."""

    exit_code = ExitCode.NOT_FINISHED
    kind = "not_finished"

    def __init__(self, batch_id: str, status: str) -> None:
        super().__init__(f"Batch {batch_id} is {status}; it has no results until it finishes.")


class Detached(ClientError):
    """Stopped watching; the batch keeps running."""

    exit_code = ExitCode.INTERRUPTED
    label = "stopped"
    kind = "interrupted"

    def __init__(self, batch_id: str) -> None:
        super().__init__(
            f"{batch_id} keeps running. "
            f"Follow it with `batchd wait {batch_id}`, stop it with `batchd cancel {batch_id}`."
        )
        self.batch_id = batch_id
