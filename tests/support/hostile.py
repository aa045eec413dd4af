"""Odd and hostile values an ASGI app may hand a server, shared by the differential tests of the
app's side (tests/server/test_app_messages_diff.py, tests/websocket/test_ws_app_messages_diff.py).
Each stands for a way an app can be legal-but-unusual or wrong; the tests decide what a server
must do with it."""

from __future__ import annotations

from collections.abc import Mapping


class Boom(Exception):
    """The app's own exception, raised from inside one of its objects."""


class DictSub(dict):
    pass


class StrSub(str):
    """A str subclass: equal to the literal, not the same object."""


class BytesSub(bytes):
    pass


class FrozenMapping(Mapping):
    """A Mapping that is not a dict (the spec says messages are dicts)."""

    def __init__(self, d):
        self._d = d

    def __getitem__(self, k):
        return self._d[k]

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)


class RaisingDict(dict):
    """A dict whose Python-level accessors raise: a server that reads it as a dict is fine."""

    def __getitem__(self, k):
        raise Boom("getitem")

    def get(self, k, default=None):
        raise Boom("get")


class OddInt(int):
    """An int whose __index__/__int__ lie: the int value is what counts."""

    def __index__(self):
        return 999

    def __int__(self):
        return 42


class Truthy:
    def __bool__(self):
        return True


class Falsy:
    def __bool__(self):
        return False


class BoolRaises:
    def __bool__(self):
        raise Boom("bool")
