from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GatewayBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[GatewayEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[GatewayEvent, _Mapping]]] = ...) -> None: ...

class BackendBatch(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[BackendEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[BackendEvent, _Mapping]]] = ...) -> None: ...

class SessionInfo(_message.Message):
    __slots__ = ("session_id", "user_id", "routing_key", "transport", "pod_id", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ROUTING_KEY_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    POD_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user_id: str
    routing_key: str
    transport: str
    pod_id: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., routing_key: _Optional[str] = ..., transport: _Optional[str] = ..., pod_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SessionOpened(_message.Message):
    __slots__ = ("session", "resumed", "last_message_id", "trace_context")
    class TraceContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    LAST_MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_CONTEXT_FIELD_NUMBER: _ClassVar[int]
    session: SessionInfo
    resumed: bool
    last_message_id: int
    trace_context: _containers.ScalarMap[str, str]
    def __init__(self, session: _Optional[_Union[SessionInfo, _Mapping]] = ..., resumed: _Optional[bool] = ..., last_message_id: _Optional[int] = ..., trace_context: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Persisted(_message.Message):
    __slots__ = ("session_id", "message_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    message_id: int
    def __init__(self, session_id: _Optional[str] = ..., message_id: _Optional[int] = ...) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("session_id", "seq", "data", "binary")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    seq: int
    data: bytes
    binary: bool
    def __init__(self, session_id: _Optional[str] = ..., seq: _Optional[int] = ..., data: _Optional[bytes] = ..., binary: _Optional[bool] = ...) -> None: ...

class SessionClosed(_message.Message):
    __slots__ = ("session_id", "code", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    code: int
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class ClientPublication(_message.Message):
    __slots__ = ("session_id", "request_id", "channel", "data", "binary", "user_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: int
    channel: str
    data: bytes
    binary: bool
    user_id: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[int] = ..., channel: _Optional[str] = ..., data: _Optional[bytes] = ..., binary: _Optional[bool] = ..., user_id: _Optional[str] = ...) -> None: ...

class GatewayEvent(_message.Message):
    __slots__ = ("opened", "message", "closed", "persisted", "publication")
    OPENED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    PERSISTED_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    opened: SessionOpened
    message: ClientMessage
    closed: SessionClosed
    persisted: Persisted
    publication: ClientPublication
    def __init__(self, opened: _Optional[_Union[SessionOpened, _Mapping]] = ..., message: _Optional[_Union[ClientMessage, _Mapping]] = ..., closed: _Optional[_Union[SessionClosed, _Mapping]] = ..., persisted: _Optional[_Union[Persisted, _Mapping]] = ..., publication: _Optional[_Union[ClientPublication, _Mapping]] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("session_id", "data", "binary", "droppable", "coalesce_key", "message_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    DROPPABLE_FIELD_NUMBER: _ClassVar[int]
    COALESCE_KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    data: bytes
    binary: bool
    droppable: bool
    coalesce_key: str
    message_id: int
    def __init__(self, session_id: _Optional[str] = ..., data: _Optional[bytes] = ..., binary: _Optional[bool] = ..., droppable: _Optional[bool] = ..., coalesce_key: _Optional[str] = ..., message_id: _Optional[int] = ...) -> None: ...

class CloseSession(_message.Message):
    __slots__ = ("session_id", "code", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    code: int
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("session_id", "channel")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    channel: str
    def __init__(self, session_id: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("session_id", "channel")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    channel: str
    def __init__(self, session_id: _Optional[str] = ..., channel: _Optional[str] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("channel", "data", "binary")
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    channel: str
    data: bytes
    binary: bool
    def __init__(self, channel: _Optional[str] = ..., data: _Optional[bytes] = ..., binary: _Optional[bool] = ...) -> None: ...

class PublicationDecision(_message.Message):
    __slots__ = ("session_id", "request_id", "accept", "data", "binary", "replace", "reason")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BINARY_FIELD_NUMBER: _ClassVar[int]
    REPLACE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    request_id: int
    accept: bool
    data: bytes
    binary: bool
    replace: bool
    reason: str
    def __init__(self, session_id: _Optional[str] = ..., request_id: _Optional[int] = ..., accept: _Optional[bool] = ..., data: _Optional[bytes] = ..., binary: _Optional[bool] = ..., replace: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class BackendEvent(_message.Message):
    __slots__ = ("message", "close", "subscribe", "unsubscribe", "publish", "decision")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    message: ServerMessage
    close: CloseSession
    subscribe: Subscribe
    unsubscribe: Unsubscribe
    publish: Publish
    decision: PublicationDecision
    def __init__(self, message: _Optional[_Union[ServerMessage, _Mapping]] = ..., close: _Optional[_Union[CloseSession, _Mapping]] = ..., subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[Unsubscribe, _Mapping]] = ..., publish: _Optional[_Union[Publish, _Mapping]] = ..., decision: _Optional[_Union[PublicationDecision, _Mapping]] = ...) -> None: ...
