from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataRequest(_message.Message):
    __slots__ = ("endpoint", "docs", "parameters", "request_id", "target_executor", "write_id")
    ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    DOCS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TARGET_EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    WRITE_ID_FIELD_NUMBER: _ClassVar[int]
    endpoint: str
    docs: bytes
    parameters: bytes
    request_id: str
    target_executor: str
    write_id: str
    def __init__(self, endpoint: _Optional[str] = ..., docs: _Optional[bytes] = ..., parameters: _Optional[bytes] = ..., request_id: _Optional[str] = ..., target_executor: _Optional[str] = ..., write_id: _Optional[str] = ...) -> None: ...

class ExecutorError(_message.Message):
    __slots__ = ("executor", "type", "message", "traceback")
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    executor: str
    type: str
    message: str
    traceback: str
    def __init__(self, executor: _Optional[str] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class Hop(_message.Message):
    __slots__ = ("executor", "shard", "replica")
    EXECUTOR_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    executor: str
    shard: int
    replica: int
    def __init__(self, executor: _Optional[str] = ..., shard: _Optional[int] = ..., replica: _Optional[int] = ...) -> None: ...

class DataResponse(_message.Message):
    __slots__ = ("docs", "parameters", "error", "route", "failed_shards", "request_id", "connection_error", "leader_hint", "leader_term")
    DOCS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    FAILED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONNECTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    LEADER_HINT_FIELD_NUMBER: _ClassVar[int]
    LEADER_TERM_FIELD_NUMBER: _ClassVar[int]
    docs: bytes
    parameters: bytes
    error: ExecutorError
    route: _containers.RepeatedCompositeFieldContainer[Hop]
    failed_shards: _containers.RepeatedScalarFieldContainer[str]
    request_id: str
    connection_error: str
    leader_hint: int
    leader_term: int
    def __init__(self, docs: _Optional[bytes] = ..., parameters: _Optional[bytes] = ..., error: _Optional[_Union[ExecutorError, _Mapping]] = ..., route: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., failed_shards: _Optional[_Iterable[str]] = ..., request_id: _Optional[str] = ..., connection_error: _Optional[str] = ..., leader_hint: _Optional[int] = ..., leader_term: _Optional[int] = ...) -> None: ...

class DataRequests(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[DataRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[DataRequest, _Mapping]]] = ...) -> None: ...

class DataResponses(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[DataResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[DataResponse, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusReply(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class PoolsUpdate(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class RaftAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProposeReply(_message.Message):
    __slots__ = ("term", "index", "leader", "error")
    TERM_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    term: int
    index: int
    leader: int
    error: str
    def __init__(self, term: _Optional[int] = ..., index: _Optional[int] = ..., leader: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class MembershipChange(_message.Message):
    __slots__ = ("json",)
    JSON_FIELD_NUMBER: _ClassVar[int]
    json: bytes
    def __init__(self, json: _Optional[bytes] = ...) -> None: ...
