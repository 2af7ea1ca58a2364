"""Encoding of messages and results: JSON (default), msgpack, pickle (opt-in), and signing.

Arguments travel as plain JSON/msgpack values and are cast back to the function's annotations on
the worker with `cast`, so a `datetime` parameter receives a `datetime`.
"""

from __future__ import annotations

import hashlib
import hmac
import pickle
from typing import Any, Final, Protocol, TypeVar

import msgspec

from conveyor.errors import ConfigurationError, SerializationError, SignatureError

__all__ = ["ArgumentTypes", "Serializer", "Signer", "cast", "check_cast", "get_serializer"]

T = TypeVar("T")


def _enc_hook(obj: Any) -> Any:
    dump = getattr(obj, "model_dump", None)  # pydantic v2 models, without importing pydantic
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"cannot serialize an object of type {type(obj).__qualname__}")


def _dec_hook(type_: type[Any], obj: Any) -> Any:
    if type_ is object:  # `object` takes anything, as `Any` does
        return obj
    validate = getattr(type_, "model_validate", None)
    if callable(validate):
        return validate(obj)
    raise NotImplementedError(f"cannot cast to {type_!r}")


def cast(value: Any, annotation: Any) -> Any:
    """Convert a decoded JSON/msgpack value to `annotation` (datetime, UUID, Struct, pydantic...).

    Raises:
        SerializationError: when the value does not fit the annotation.
    """
    try:
        return msgspec.convert(value, annotation, strict=False, dec_hook=_dec_hook)
    except (msgspec.ValidationError, NotImplementedError, TypeError) as exc:
        raise SerializationError(str(exc)) from exc


class ArgumentTypes:
    """The annotated parameters of one task, checked together in one `msgspec.convert` into a
    Struct made once from them (one call into msgspec, its type information cached, instead of
    one call per argument).

    Args:
        types: parameter name -> annotation.
    """

    def __init__(self, types: dict[str, Any]) -> None:
        try:
            fields = [(name, annotation, msgspec.UNSET) for name, annotation in types.items()]
            self._struct: Any = msgspec.defstruct("Arguments", fields) if fields else None
        except (TypeError, ValueError):  # a name msgspec refuses: only `check_cast` is used
            self._struct = None

    def fit(self, named: dict[str, Any]) -> bool:
        """True when every value of `named` (name -> value; other names are ignored) converts
        to its annotation as the Python value it is. False does not mean the worker refuses
        it: `check_cast` tells (a value may change on its way through the serializer)."""
        if self._struct is None:
            return False
        try:
            msgspec.convert(named, self._struct, strict=False, dec_hook=_dec_hook)
        except (msgspec.ValidationError, NotImplementedError, TypeError, ValueError):
            return False
        return True


def check_cast(value: Any, annotation: Any, serializer: Serializer) -> None:
    """Check on the sending side that `cast` will accept `value` in the worker, where it
    arrives encoded and decoded by `serializer`.

    The Python value is converted first (one `msgspec.convert`); only when that fails is the
    value put through the serializer, which can change it (a dict's int keys become strings in
    JSON), and cast as the worker will. So nothing the worker accepts is refused.

    Raises:
        SerializationError: the worker would refuse the value, or it cannot be encoded.
    """
    try:
        msgspec.convert(value, annotation, strict=False, dec_hook=_dec_hook)
        return
    except (msgspec.ValidationError, NotImplementedError, TypeError, ValueError):
        pass
    cast(serializer.decode(serializer.encode(value), object), annotation)


class Serializer(Protocol):
    """Turns structs into bytes and back; one instance per broker."""

    name: str

    def encode(self, obj: Any) -> bytes:
        """Encode; raise `SerializationError` for values the format cannot hold."""
        ...

    def decode(self, data: bytes, type_: type[T]) -> T:
        """Decode bytes into `type_`; raise `SerializationError` for malformed input."""
        ...


class _MsgspecSerializer:
    def __init__(self, name: str, module: Any) -> None:
        self.name = name
        self._encoder = module.Encoder(enc_hook=_enc_hook)
        self._module = module
        self._decoders: dict[Any, Any] = {}

    def encode(self, obj: Any) -> bytes:
        try:
            data: bytes = self._encoder.encode(obj)
        except (TypeError, OverflowError, msgspec.EncodeError) as exc:
            raise SerializationError(f"cannot encode with {self.name}: {exc}") from exc
        except RecursionError:
            raise SerializationError(f"cannot encode with {self.name}: nested too deeply") from None
        return data

    def decode(self, data: bytes, type_: type[T]) -> T:
        decoder = self._decoders.get(type_)
        if decoder is None:
            target = Any if type_ is object else type_  # `object`: any value, untyped
            decoder = self._decoders[type_] = self._module.Decoder(target, dec_hook=_dec_hook)
        try:
            result: T = decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, NotImplementedError) as exc:
            raise SerializationError(f"malformed {self.name} data: {exc}") from exc
        except RecursionError:
            raise SerializationError(f"malformed {self.name} data: nested too deeply") from None
        return result


class _PickleSerializer:
    name = "pickle"

    def encode(self, obj: Any) -> bytes:
        try:
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"cannot encode with pickle: {exc}") from exc

    def decode(self, data: bytes, type_: type[T]) -> T:
        try:
            obj = pickle.loads(data)
        except Exception as exc:
            raise SerializationError(f"malformed pickle data: {exc}") from exc
        if not isinstance(obj, type_):
            raise SerializationError(f"pickle data is {type(obj).__name__}, not {type_.__name__}")
        return obj


def get_serializer(name: str) -> Serializer:
    """Return the serializer called `name`: "json", "msgpack" or "pickle"."""
    if name == "json":
        return _MsgspecSerializer("json", msgspec.json)
    if name == "msgpack":
        return _MsgspecSerializer("msgpack", msgspec.msgpack)
    if name == "pickle":
        return _PickleSerializer()
    raise ConfigurationError(f"unknown serializer {name!r}: use 'json', 'msgpack' or 'pickle'")


_MAGIC: Final = b"\x01CV1"
_MAC_SIZE: Final = 32


class Signer:
    """Adds and checks an HMAC-SHA256 over each message body (`CONVEYOR_SECRET_KEY`), and over
    whatever else is read back from a store and trusted (`derive`).

    Args:
        key: the secret key; None or empty signs and checks nothing.
        what: what it signs, for errors ("message", "stored result", ...).
    """

    def __init__(self, key: str | bytes | None, what: str = "message") -> None:
        self._key = key.encode() if isinstance(key, str) else key
        self.what = what

    @property
    def enabled(self) -> bool:
        """True when a key is set and messages are signed and checked."""
        return bool(self._key)

    def derive(self, purpose: str) -> Signer:
        """A signer for one other kind of data, with a key of its own made from this one, so
        data signed for one purpose is refused for another (a result is never a message)."""
        if not self._key:
            return Signer(None, purpose)
        return Signer(hmac.digest(self._key, purpose.encode(), hashlib.sha256), purpose)

    def sign(self, body: bytes) -> bytes:
        """Return `body` framed with its signature, or unchanged when no key is set."""
        if not self._key:
            return body
        return _MAGIC + hmac.digest(self._key, body, hashlib.sha256) + body

    def verify(self, data: bytes) -> bytes:
        """Return the body of `data` after checking its signature.

        Raises:
            SignatureError: the key is set and the signature is missing or wrong, or the
                data is signed and no key is set.
        """
        signed = data.startswith(_MAGIC)
        if not self._key:
            if signed:
                raise SignatureError(f"{self.what} is signed but CONVEYOR_SECRET_KEY is not set")
            return data
        if not signed:
            raise SignatureError(f"{self.what} is not signed")
        start = len(_MAGIC)
        mac, body = data[start : start + _MAC_SIZE], data[start + _MAC_SIZE :]
        if not hmac.compare_digest(mac, hmac.digest(self._key, body, hashlib.sha256)):
            raise SignatureError(f"{self.what} signature does not match")
        return body
