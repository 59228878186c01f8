"""Exceptions users catch."""


class ExecutorError(RuntimeError):
    """An executor endpoint raised; the message names the executor, the type and the message."""

    def __init__(self, executor: str, type_name: str, message: str, traceback: str = ''):
        super().__init__(f'executor {executor!r} raised {type_name}: {message}')
        self.executor = executor
        self.type_name = type_name
        self.remote_traceback = traceback


class IgnoredArgumentWarning(UserWarning):
    """A reference-system (Jina) argument that nborch accepts but that changes nothing here;
    the message says why (nborch.compat lists them)."""


class PortInUseError(OSError):
    """A port nborch was asked to listen on is taken (checked before any process starts)."""


class ExportError(ValueError):
    """An orchestration cannot be exported as it is (`nborch export`, `to_kubernetes_yaml`);
    the message says what to change. Nothing is written when it is raised."""


class MembershipError(ValueError):
    """A stateful executor's workspace holds a Raft group other than the one being started
    (another replica count, or a replica folder of another group); raised before anything
    starts. The message names the workspace, what it records and what was asked for."""


class UnavailableError(ConnectionError):
    """The gateway (or worker) could not be reached, or its connection broke mid-request
    (gRPC UNAVAILABLE). Retryable: a supervised gateway comes back on the same port."""


class IncompletePostError(RuntimeError):
    """A `post(..., continue_on_error=True)` without `on_error` in which some requests
    failed. `docs` holds every doc that came back (in input order); `failed` holds one
    `Response` per failed request, with that request's input docs and its `error`."""

    def __init__(self, docs, failed: list):
        self.docs = docs
        self.failed = failed
        lost = sum(len(r.docs) for r in failed)
        shown = '; '.join(f'{len(r.docs)} doc(s) starting {_first_id(r.docs)}: {r.error}'
                          for r in failed[:3])
        more = f'; and {len(failed) - 3} more' if len(failed) > 3 else ''
        super().__init__(f'{len(failed)} request(s) failed ({lost} doc(s)); {len(docs)} doc(s) '
                         f'came back (in .docs; the failed requests in .failed): {shown}{more}')


def _first_id(docs) -> str:
    return repr(docs[0].id) if len(docs) else '(none)'


class MessageTooLargeError(ValueError):
    """A request or reply over a limit: `max_message_size` bytes or `max_request_docs` docs.

    The message names the limit, the size and the option that raises it. Nothing of the
    request was run when the request was too large.
    """


class RolloutError(RuntimeError):
    """A rolling update stopped because a new replica did not start; the message says how
    many replicas run the new version (the others still serve the old one) and why."""


class ConfigError(ValueError):
    """A YAML file that cannot be used; the message is `FILE:LINE: what is wrong`."""

    def __init__(self, path: str, line: int | None, message: str):
        self.path = path
        self.line = line
        self.problem = message
        super().__init__(f'{path}:{line}: {message}' if line else f'{path}: {message}')


class ChildStartError(RuntimeError):
    """A replica or gateway process exited or timed out before reporting ready; the
    message carries the end of its log."""
