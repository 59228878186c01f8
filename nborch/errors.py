"""Exceptions users catch."""


class ExecutorError(RuntimeError):
    """An executor endpoint raised; the message names the executor, the type and the message."""

    def __init__(self, executor: str, type_name: str, message: str, traceback: str = ''):
        super().__init__(f'executor {executor!r} raised {type_name}: {message}')
        self.executor = executor
        self.type_name = type_name
        self.remote_traceback = traceback


class PortInUseError(OSError):
    """A port nborch was asked to listen on is taken (checked before any process starts)."""


class ExportError(ValueError):
    """An orchestration cannot be exported as it is (`nborch export`, `to_kubernetes_yaml`);
    the message says what to change. Nothing is written when it is raised."""


class MessageTooLargeError(ValueError):
    """A request or reply over a limit: `max_message_size` bytes or `max_request_docs` docs.

    The message names the limit, the size and the option that raises it. Nothing of the
    request was run when the request was too large.
    """
