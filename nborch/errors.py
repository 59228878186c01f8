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


class MembershipError(ValueError):
    """A stateful executor's workspace holds a Raft group other than the one being started
    (another replica count, or a replica folder of another group); raised before anything
    starts. The message names the workspace, what it records and what was asked for."""
