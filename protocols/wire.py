"""Decoders for what peers send: msgspec's Decoder, then the amount grammar it cannot check.

Owns: ``wire_decoder`` (built once per message type, at import) and ``AmountSyntaxError``. Must
not: do I/O, or judge an amount's value (decimal places, size and sign are the ledger's rules).

Why two passes over the bytes. msgspec decodes a JSON string into ``Decimal`` with
``Decimal(text)``, which also takes "1_0", "+1", " 1 ", "1.", ".5", "1E+0", "NaN" and other
scripts' digits ("١", "１"); the published grammar (``protocols.amounts.AMOUNT_PATTERN``) takes
none of them. msgspec has no hook on that path: ``Meta(pattern=...)`` applies to ``str`` fields
only, a ``str | Decimal`` union is refused, and a custom type receives a JSON number as a float
(lossy) unless a ``float_hook`` makes every untyped float of the message a Decimal, those of the
free-form ``payload`` objects too. So the Struct is decoded as before (numbers exact, every
structural error msgspec's own, with its path), then a shadow Struct that keeps only the amount
fields, each as ``msgspec.Raw`` (its exact JSON text; nothing else is built), and every string
among them must be in the grammar. Numbers pass: the schema says ``number``, JSON's own grammar,
and msgspec has already parsed their text exactly.

The journal replays with the plain Decoders of ``protocols.registry``, not these: an amount once
accepted must replay, and the canonical JSON of one sent as the number ``1e3`` is ``"1E+3"``.
"""

import json
import re
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
from msgspec import inspect as mi

from protocols.amounts import AMOUNT_DIGITS, is_amount_text

StructT = TypeVar("StructT", bound=msgspec.Struct)
# A bad amount found in a decoded shadow value: where below that value (".limits.burst", "" for
# the value itself), and the string sent. Paths are built only for a refusal: this runs per message.
_Found = tuple[str, str]
_Check = Callable[[Any], _Found | None]
# The exact JSON text of an amount field that needs no closer look: a number or null (the first
# pass took it as one), the empty text of a field left out, or a string in the grammar without
# escapes. Anything else is a string that _bad_raw decodes and matches.
_raw_plainly_valid: Final = re.compile(
    b'(?:[^"].*)?|"' + AMOUNT_DIGITS.encode() + b'"',
    re.DOTALL,
).fullmatch
_SHOWN_CHARS_MAX: Final = 40


class AmountSyntaxError(msgspec.ValidationError):
    """An amount field holds a JSON string outside the grammar.

    ``path`` is the field's, as msgspec writes it (``$.bid.cost``); ``text`` is the string sent.
    The message ends in msgspec's `` - at `$.path` `` so it reads like any validation error.
    """

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        # JSON with ASCII escapes shows what a person cannot see: "\u0661" for "١", "\n", "\t".
        shown = json.dumps(text[:_SHOWN_CHARS_MAX])
        if len(text) > _SHOWN_CHARS_MAX:
            shown += "..."
        super().__init__(
            f'Expected tokens as a JSON number or a string like "12.5" (ASCII digits, an optional '
            f'leading "-", an optional "." with digits on both sides), got {shown} - at `{path}`'
        )


def wire_decoder(struct_type: type[StructT]) -> Callable[[bytes | str], StructT]:
    """The decode function for ``struct_type`` from a peer: msgspec's, then the amount grammar.

    For a type without amount fields it is msgspec's own ``Decoder.decode``. The function raises
    ``msgspec.DecodeError`` (``msgspec.ValidationError`` with the field's path) as msgspec does,
    and ``AmountSyntaxError`` (a ``ValidationError``) for an amount string outside the grammar.
    Raises ``TypeError`` at build time for an amount no shadow can reach (inside a dict, a set, a
    tuple, an array-like Struct, or a union with more than Structs, scalars and ``None``).
    """
    decode = msgspec.json.Decoder(struct_type).decode
    info = mi.type_info(struct_type)
    assert isinstance(info, mi.StructType), struct_type
    shadow = _shadow_struct(info)
    if shadow is None:
        return decode
    shadow_type, check = shadow
    decode_shadow = msgspec.json.Decoder(shadow_type).decode

    def decode_checked(body: bytes | str) -> StructT:
        try:
            value = decode(body)
        except msgspec.ValidationError as exc:
            # Decimal(text) refuses a few strings itself ("", "1..2"): amounts outside the
            # grammar all the same, so refused as such where the shadow can still read them.
            try:
                found = check(decode_shadow(body))
            except msgspec.DecodeError:
                # msgspec stops at the first invalid field, so the JSON may be malformed beyond
                # it: the first pass's error stands.
                found = None
            if found is not None:
                raise AmountSyntaxError("$" + found[0], found[1]) from exc
            raise
        # Once the message is valid as msgspec sees it, the shadow (which skips every other
        # field) meets nothing but amounts already taken as JSON strings, numbers or null.
        found = check(decode_shadow(body))
        if found is not None:
            raise AmountSyntaxError("$" + found[0], found[1])
        return value

    return decode_checked


def _bad_raw(raw: msgspec.Raw) -> _Found | None:
    if _raw_plainly_valid(raw) is not None:
        return None
    # A string with escapes ("\u0031" is "1", and fine) or outside the grammar.
    text = msgspec.json.decode(raw, type=str)
    return None if is_amount_text(text) else ("", text)


def _shadow(t: mi.Type) -> tuple[Any, _Check] | None:
    """The shadow of a field type and the check of its decoded value; None when it holds no
    amount. A shadow that is not an amount itself is optional (``None`` is skipped)."""
    if isinstance(t, mi.DecimalType):
        return msgspec.Raw, _bad_raw
    if isinstance(t, mi.StructType):
        shadow = _shadow_struct(t)
        return None if shadow is None else (shadow[0] | None, _skip_none(shadow[1]))
    if isinstance(t, mi.UnionType):
        return _shadow_union(t)
    if isinstance(t, mi.ListType | mi.VarTupleType):
        item = _shadow(t.item_type)
        if item is None:
            return None
        item_type, item_check = item

        def check_items(items: list[Any] | None) -> _Found | None:
            for index, value in enumerate(items or ()):
                found = item_check(value)
                if found is not None:
                    return f"[{index}]{found[0]}", found[1]
            return None

        return list.__class_getitem__(item_type) | None, check_items
    if _has_amount(t):
        raise TypeError(f"protocols.wire cannot check the amounts inside {t}")
    return None


def _shadow_struct(
    info: mi.StructType, *, tagged_member: bool = False
) -> tuple[Any, _Check] | None:
    """A Struct of the amount fields of ``info`` (each as ``Raw``, or as a shadow of what holds
    them); None when there are none, unless it is a member of a tagged union (whose tag must
    still be recognised when the member sent has no amounts)."""
    if info.array_like:
        raise TypeError(f"protocols.wire cannot check the amounts of array-like {info.cls}")
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    # Amount fields first, without a call each: most messages have only these.
    amounts: list[tuple[str, str]] = []
    holders: list[tuple[str, str, _Check]] = []
    for field in info.fields:
        shadow = _shadow(field.type)
        if shadow is None:
            continue
        shadow_type, check = shadow
        rename[field.name] = field.encode_name
        if check is _bad_raw:
            fields.append((field.name, msgspec.Raw, msgspec.Raw()))
            amounts.append((field.name, field.encode_name))
        else:
            fields.append((field.name, shadow_type, None))
            holders.append((field.name, field.encode_name, check))
    if not fields and not tagged_member:
        return None
    shadow_type = msgspec.defstruct(
        f"{info.cls.__name__}Amounts",
        fields,
        module=__name__,
        rename=rename,
        tag_field=info.tag_field,
        tag=info.tag,
        kw_only=True,
        # Transient, holding only Raw texts and other shadows: no reference cycles.
        gc=False,
    )
    amount_fields = tuple(amounts)
    holder_fields = tuple(holders)

    def check_fields(value: Any) -> _Found | None:
        for name, encode_name in amount_fields:
            raw = getattr(value, name)
            # An empty Raw is a field left out: a length test costs less than the regex.
            if raw and _raw_plainly_valid(raw) is None and (found := _bad_raw(raw)) is not None:
                return f".{encode_name}", found[1]
        for name, encode_name, check in holder_fields:
            found = check(getattr(value, name))
            if found is not None:
                return f".{encode_name}{found[0]}", found[1]
        return None

    return shadow_type, check_fields


def _shadow_union(t: mi.UnionType) -> tuple[Any, _Check] | None:
    members = [m for m in t.types if not isinstance(m, mi.NoneType)]
    holders = [m for m in members if _has_amount(m)]
    if not holders:
        return None
    if len(members) == 1:
        return _shadow(members[0])
    if holders == [mi.DecimalType()]:
        # Decimal with scalars or amountless Structs (msgspec allows no other str-like type
        # beside Decimal, so every JSON string in this field is an amount): its Raw text.
        return msgspec.Raw, _bad_raw
    if all(isinstance(m, mi.StructType) for m in members):
        # A tagged union: every member keeps its tag, so that msgspec picks the same one.
        union: Any = None
        checks: dict[type, _Check] = {}
        for member in members:
            assert isinstance(member, mi.StructType)
            shadow = _shadow_struct(member, tagged_member=True)
            assert shadow is not None
            union = shadow[0] if union is None else union | shadow[0]
            checks[shadow[0]] = shadow[1]

        def check_member(value: Any) -> _Found | None:
            return None if value is None else checks[type(value)](value)

        return union | None, check_member
    raise TypeError(f"protocols.wire cannot check the amounts inside {t}")


def _skip_none(check: _Check) -> _Check:
    def check_present(value: Any) -> _Found | None:
        return None if value is None else check(value)

    return check_present


def _has_amount(t: mi.Type) -> bool:
    """Whether a ``Decimal`` is anywhere inside ``t``."""
    if isinstance(t, mi.DecimalType):
        return True
    if isinstance(t, mi.StructType | mi.TypedDictType | mi.DataclassType | mi.NamedTupleType):
        return any(_has_amount(f.type) for f in t.fields)
    if isinstance(t, mi.UnionType):
        return any(_has_amount(m) for m in t.types)
    if isinstance(t, mi.TupleType):
        return any(_has_amount(m) for m in t.item_types)
    if isinstance(t, mi.DictType):
        return _has_amount(t.key_type) or _has_amount(t.value_type)
    item_type = getattr(t, "item_type", None)
    return item_type is not None and _has_amount(item_type)
