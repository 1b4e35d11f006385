"""The directory's searches and simple binds, written to the wire without pyasn1.

ldap3 builds every request as a tree of pyasn1 objects, then encodes the tree: that is most of
the Python time of a search or a bind, and so of a sign-in's directory work (measured: 1.7 ms of
processor time per sign-in, of which building and encoding took about half). The requests the
portal sends come in two shapes, a search and a simple bind, with the paged-results and
password-policy controls; `LeanConnection` writes those as BER bytes directly and leaves the
rest to ldap3: the filter is parsed and checked by ldap3's own parser (so escaping and the
errors for a malformed filter stay ldap3's), the password goes through ldap3's SASLprep, the
answer is read and decoded by ldap3. The bytes are ldap3's own, byte for byte
(tests/test_wire.py compares them for every filter shape and option). Whatever else a call asks
for takes ldap3's path unchanged, which then writes it or refuses it its own way: a schema
check, ldap3's log at any level, a lazy, pooled, safe or asynchronous strategy, SASL, usage
counters, referral following, controls given as pyasn1 objects or a generator, a control OID
that is not ASCII, an anonymous bind or a password given as bytes, a name that is not UTF-8,
a filter this module does not write (`NotPlain`: a substring match without a substring).
"""

from __future__ import annotations

import ldap3
from ldap3.core.exceptions import (
    LDAPPasswordIsMandatoryError,
    LDAPSocketOpenError,
    LDAPSocketSendError,
    LDAPUserNameIsMandatoryError,
    communication_exception_factory,
)
from ldap3.core.results import RESULT_SUCCESS
from ldap3.operation import search as ldap3_search
from ldap3.protocol.convert import prepare_filter_for_sending
from ldap3.protocol.sasl.sasl import validate_simple_password
from ldap3.strategy.sync import SyncStrategy
from ldap3.utils.conv import to_unicode
from ldap3.utils.dn import safe_dn
from ldap3.utils.log import ERROR, log_enabled

_SCOPES = {ldap3.BASE: 0, 0: 0, ldap3.LEVEL: 1, 1: 1, ldap3.SUBTREE: 2, 2: 2}
_DEREFS = {ldap3.DEREF_NEVER: 0, 0: 0, ldap3.DEREF_SEARCH: 1, 1: 1,
           ldap3.DEREF_BASE: 2, 2: 2, ldap3.DEREF_ALWAYS: 3, 3: 3}  # fmt: skip
_MAX_INT = 2**31 - 1  # RFC 4511's maxInt: the bound of sizeLimit, timeLimit and message IDs
_PAGED_RESULTS = "1.2.840.113556.1.4.319"

# BER tags (RFC 4511, section 4; universal, application and context-specific).
_INTEGER, _OCTETS, _ENUMERATED, _BOOLEAN, _SEQUENCE = 0x02, 0x04, 0x0A, 0x01, 0x30
_BIND_REQUEST, _SEARCH_REQUEST, _CONTROLS, _SIMPLE = 0x60, 0x63, 0xA0, 0x80
_AND, _OR, _NOT = 0xA0, 0xA1, 0xA2
_EQUAL, _SUBSTRINGS, _GREATER, _LESS, _PRESENT, _APPROX, _EXTENSIBLE = (
    0xA3, 0xA4, 0xA5, 0xA6, 0x87, 0xA8, 0xA9)  # fmt: skip
_SET_OPERATORS = {ldap3_search.AND: _AND, ldap3_search.OR: _OR}
_ASSERTIONS = {
    ldap3_search.MATCH_EQUAL: _EQUAL,
    ldap3_search.MATCH_GREATER_OR_EQUAL: _GREATER,
    ldap3_search.MATCH_LESS_OR_EQUAL: _LESS,
    ldap3_search.MATCH_APPROX: _APPROX,
}


def _tlv(tag: int, content: bytes) -> bytes:
    # Definite lengths only: short form below 128, else 0x8N and N bytes of length.
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def _integer(value: int, tag: int = _INTEGER) -> bytes:
    # Non-negative only (checked by the callers): the fewest bytes with a clear sign bit.
    return _tlv(tag, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def _text(value: str) -> bytes:
    return _tlv(_OCTETS, value.encode("utf-8"))


def _boolean(value: bool) -> bytes:
    return bytes((_BOOLEAN, 1, 0xFF if value else 0x00))  # ldap3 sends TRUE as 0xFF


class NotPlain(ValueError):
    """A filter this module does not write (ldap3's own path then sends it, or refuses it)."""


def encode_filter(node) -> bytes:
    """The BER bytes of one node of a filter as ldap3's parse_filter returns it; NotPlain for
    one it does not write."""
    tag = node.tag
    if tag in _SET_OPERATORS:
        return _tlv(_SET_OPERATORS[tag], b"".join(encode_filter(each) for each in node.elements))
    if tag == ldap3_search.NOT:
        return _tlv(_NOT, encode_filter(node.elements[0]))
    assertion = node.assertion
    if tag in _ASSERTIONS:
        value = prepare_filter_for_sending(assertion["value"])
        return _tlv(_ASSERTIONS[tag], _text(assertion["attr"]) + _tlv(_OCTETS, value))
    if tag == ldap3_search.MATCH_PRESENT:
        return _tlv(_PRESENT, assertion["attr"].encode("utf-8"))
    if tag == ldap3_search.MATCH_SUBSTRING:
        parts = []
        if assertion.get("initial"):
            parts.append(_tlv(0x80, prepare_filter_for_sending(assertion["initial"])))
        for middle in assertion.get("any") or ():
            parts.append(_tlv(0x81, prepare_filter_for_sending(middle)))
        if assertion.get("final"):
            parts.append(_tlv(0x82, prepare_filter_for_sending(assertion["final"])))
        if not parts:  # "(cn=**)": ldap3's encoder refuses it (SIZE 1..MAX), so must we
            raise NotPlain("a substring filter without a substring")
        substrings = _tlv(_SEQUENCE, b"".join(parts))
        return _tlv(_SUBSTRINGS, _text(assertion["attr"]) + substrings)
    if tag == ldap3_search.MATCH_EXTENSIBLE:
        parts = []
        if assertion["matchingRule"]:
            parts.append(_tlv(0x81, assertion["matchingRule"].encode("utf-8")))
        if assertion["attr"]:
            parts.append(_tlv(0x82, assertion["attr"].encode("utf-8")))
        parts.append(_tlv(0x83, prepare_filter_for_sending(assertion["value"])))
        if assertion["dnAttributes"]:  # DEFAULT FALSE: sent only when true
            parts.append(bytes((0x84, 1, 0xFF)))
        return _tlv(_EXTENSIBLE, b"".join(parts))
    raise NotPlain(f"unknown filter node tag {tag}")


def encode_controls(controls) -> bytes:
    """The controls part of a message, from (OID, criticality, value bytes or None) triples."""
    if not controls:
        return b""
    encoded = []
    for oid, critical, value in controls:
        parts = _text(oid)
        if critical:  # DEFAULT FALSE: sent only when true
            parts += _boolean(True)
        if value is not None:
            parts += _tlv(_OCTETS, value)
        encoded.append(_tlv(_SEQUENCE, parts))
    return _tlv(_CONTROLS, b"".join(encoded))


def paged_results_value(size: int, cookie: bytes | None) -> bytes:
    """The value of the paged-results control (RFC 2696): the page size and the cookie."""
    return _tlv(_SEQUENCE, _integer(size) + _tlv(_OCTETS, cookie or b""))


def encode_message(message_id: int, operation: bytes, controls: bytes = b"") -> bytes:
    """One LDAPMessage: its ID, the encoded operation and, if any, the encoded controls."""
    return _tlv(_SEQUENCE, _integer(message_id) + operation + controls)


def search_request(
    base: str,
    scope: int,
    deref: int,
    size_limit: int,
    time_limit: int,
    types_only: bool,
    filter_bytes: bytes,
    attributes: list[str],
) -> bytes:
    """A SearchRequest operation, its filter already encoded."""
    selection = _tlv(_SEQUENCE, b"".join(_text(name) for name in attributes))
    return _tlv(_SEARCH_REQUEST, _text(base) + _integer(scope, _ENUMERATED)
                + _integer(deref, _ENUMERATED) + _integer(size_limit) + _integer(time_limit)
                + _boolean(bool(types_only)) + filter_bytes + selection)  # fmt: skip


def bind_request(version: int, name: str, password: bytes) -> bytes:
    """A simple BindRequest operation (the password already SASLprepped, as bytes)."""
    return _tlv(_BIND_REQUEST, _integer(version) + _text(name) + _tlv(_SIMPLE, password))


def _plain_controls(controls) -> bool:
    # Only a list or tuple of (OID string, bool, bytes or None) triples: anything else (a
    # generator, which checking would use up; pyasn1 controls) is ldap3's to build.
    if controls is None:
        return True
    return isinstance(controls, list | tuple) and all(
        isinstance(control, tuple | list) and len(control) == 3 and isinstance(control[0], str)
        and control[0].isascii()  # ldap3 writes an OID as Latin-1, this module as UTF-8
        and isinstance(control[1], bool) and isinstance(control[2], bytes | type(None))
        for control in controls
    )  # fmt: skip


class LeanConnection(ldap3.Connection):
    """An ldap3 Connection whose plain searches and simple binds skip pyasn1 (see the module)."""

    def _lean(self, controls) -> bool:
        return (
            type(self.strategy) is SyncStrategy
            and not self.lazy
            and not self.usage
            and not self.sasl_in_progress
            and self.sasl_mechanism is None
            and self.server.schema is None
            and not self.auto_referrals  # a referral is followed from ldap3's kept request
            and not log_enabled(ERROR)  # with ldap3's log on, its lines are all written
            and _plain_controls(controls)
        )

    def search(self, search_base, search_filter, search_scope=ldap3.SUBTREE,
               dereference_aliases=ldap3.DEREF_ALWAYS, attributes=None, size_limit=0,
               time_limit=0, types_only=False, get_operational_attributes=False, controls=None,
               paged_size=None, paged_criticality=False, paged_cookie=None,
               auto_escape=None):  # fmt: skip
        """ldap3's search, its request written without pyasn1 when it can be (see the module)."""
        plain = (
            self._lean(controls)
            and not get_operational_attributes
            and isinstance(search_base, str)
            and isinstance(search_filter, str)
            and _known(search_scope, _SCOPES)
            and _known(dereference_aliases, _DEREFS)
            and _in_range(size_limit)
            and _in_range(time_limit)
            and isinstance(attributes, list | tuple | type(None))
            and all(isinstance(name, str) for name in attributes or ())
            and (paged_size is None or _in_range(paged_size))
            and isinstance(paged_criticality, bool)
            and isinstance(paged_cookie, bytes | type(None))
        )
        base = safe_dn(search_base) if plain and self.check_names and search_base else search_base
        if plain:
            escape = self.auto_escape if auto_escape is None else auto_escape
            tree = ldap3_search.parse_filter(
                search_filter, None, escape, self.auto_encode, self.server.custom_validator,
                self.check_names,
            )  # fmt: skip
            names = list(attributes) if attributes else [ldap3.NO_ATTRIBUTES]
            try:
                operation = search_request(
                    base, _SCOPES[search_scope], _DEREFS[dereference_aliases], size_limit,
                    time_limit, types_only, encode_filter(tree.elements[0]), names,
                )  # fmt: skip
            except (NotPlain, UnicodeEncodeError):  # ldap3 raises its own error for the latter
                plain = False
        if not plain:
            return super().search(search_base, search_filter, search_scope, dereference_aliases,
                                  attributes, size_limit, time_limit, types_only,
                                  get_operational_attributes, controls, paged_size,
                                  paged_criticality, paged_cookie, auto_escape)  # fmt: skip
        with self.connection_lock:
            if paged_size is not None:
                value = paged_results_value(paged_size, paged_cookie)
                controls = [*(controls or ()), (_PAGED_RESULTS, paged_criticality, value)]
            # What ldap3 keeps of the request (its auto-range follow-up searches read it); the
            # filter as it was given, where ldap3 keeps its own rewriting of it.
            request = {"base": base, "scope": _SCOPES[search_scope],
                       "dereferenceAlias": _DEREFS[dereference_aliases],
                       "sizeLimit": size_limit, "timeLimit": time_limit,
                       "typesOnly": bool(types_only), "filter": search_filter,
                       "attributes": names, "type": "searchRequest",
                       "controls": controls}  # fmt: skip
            response = self.post_send_search(self._send(operation, controls, request))
            self._entries = []
            found = self.result["type"] == "searchResDone" and len(response) > 0
            if not found and self.result["result"] != RESULT_SUCCESS and not self.last_error:
                self.last_error = self.result["description"]
            return self._prepare_return_value(found, response=True)

    def bind(self, read_server_info=True, controls=None):
        """ldap3's bind, a simple one written without pyasn1 when it can be (see the module)."""
        plain = (
            self._lean(controls)
            and self.authentication == ldap3.SIMPLE
            and isinstance(self.user, str)
            and isinstance(self.password, str)
            and self.version == 3
        )
        if not plain:
            return super().bind(read_server_info, controls)
        self.last_error = None
        with self.connection_lock:
            self._deferred_bind = False
            self._bind_controls = None
            if self.closed:
                self.open(read_server_info=False)
            if not self.user:
                raise LDAPUserNameIsMandatoryError("user name is mandatory in simple bind")
            if not self.password:
                raise LDAPPasswordIsMandatoryError("password is mandatory in simple bind")
            name = to_unicode(self.user) if self.auto_encode else self.user
            try:
                operation = bind_request(
                    self.version, name, validate_simple_password(self.password)
                )
            except UnicodeEncodeError:  # a name that is no UTF-8: ldap3 raises its own error
                return super().bind(read_server_info, controls)
            # Unlike ldap3's, the request kept on the connection never holds the password.
            hidden = {"simple": "*", "sasl": None}
            request = {"version": self.version, "name": name, "type": "bindRequest",
                       "authentication": hidden, "controls": controls}  # fmt: skip
            self.post_send_single_response(self._send(operation, controls, request))
            result = self.result
            self.bound = bool(result) and result["result"] == RESULT_SUCCESS
            if not self.bound and result and result["description"] and not self.last_error:
                self.last_error = result["description"]
            if read_server_info and self.bound:
                self.refresh_server_info()
            self._entries = []
            return self._prepare_return_value(self.bound, self.result)

    def _send(self, operation: bytes, controls, request: dict) -> int:
        # What ldap3's SyncStrategy.send and sending do for one message, with our bytes.
        self.request = None
        if not self.listening:
            self.last_error = "unable to send message, socket is not open"
            raise LDAPSocketOpenError(self.last_error)
        message_id = self.server.next_message_id()
        self.request = request
        self.strategy._outstanding[message_id] = request
        message = encode_message(message_id, operation, encode_controls(controls))
        try:
            self.socket.sendall(message)
        except OSError as error:
            self.last_error = "socket sending error" + str(error)
            # Raised as ldap3 raises it (its cause is not set there either).
            failure = communication_exception_factory(LDAPSocketSendError, type(error)(str(error)))
            raise failure(self.last_error)  # noqa: B904
        return message_id


def _in_range(value) -> bool:
    return type(value) is int and 0 <= value <= _MAX_INT


def _known(value, names: dict) -> bool:
    return isinstance(value, str | int) and value in names
