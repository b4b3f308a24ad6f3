"""Token amounts: exact decimal on the wire, integer micro-tokens everywhere else.

On the wire an amount is a JSON number, or a JSON string in ``AMOUNT_PATTERN``'s grammar, of
tokens with at most 6 decimal places. msgspec decodes either form into ``decimal.Decimal`` from
the text itself, so ``0.1`` stays exactly 0.1. No float ever holds money. The grammar is a rule on
the text (``protocols.wire`` applies it to what peers send, as ``invalid_amount``); places, size
and sign are rules on the value (``to_micro``).
"""

import re
from decimal import Decimal
from typing import Final

from protocols.errors import ErrorCode

# The grammar of an amount sent as a string: ASCII digits, an optional leading minus, an optional
# point with digits on both sides. Any number of decimals: "1.1234567" is grammatical and refused
# as too_many_decimals, as the JSON number 1.1234567 is, and "1.5000000" is 1.5 as the number
# 1.5000000 is. AMOUNT_DIGITS is the grammar unanchored, for building matchers.
AMOUNT_DIGITS: Final = r"-?[0-9]+(\.[0-9]+)?"
# As published in the JSON Schema, and read alike by both regex dialects a validator may use.
# ECMA-262's (which JSON Schema specifies) "$" is the end of the text; Python's re (which the
# jsonschema package uses, with search) also matches "$" before a final newline, which the
# lookahead rules out: "1\n" is not an amount in either.
AMOUNT_PATTERN: Final = rf"^{AMOUNT_DIGITS}$(?!\n)"
_amount_text: Final = re.compile(AMOUNT_PATTERN).search
MICRO_PER_TOKEN: Final = 1_000_000
DECIMALS_MAX: Final = 6
# One trillion tokens: far above any real balance, and small enough that sums stay cheap ints.
AMOUNT_TOKENS_MAX: Final = 10**12
_MICRO_MAX: Final = AMOUNT_TOKENS_MAX * MICRO_PER_TOKEN
# Decimal.adjusted() (the exponent of the leading digit) of the amounts to_micro converts fast.
_ADJUSTED_MIN: Final = -DECIMALS_MAX
_ADJUSTED_MAX: Final = len(str(AMOUNT_TOKENS_MAX)) - 1


def is_amount_text(text: str) -> bool:
    """Whether ``text`` is an amount in the published grammar (``AMOUNT_PATTERN``)."""
    return _amount_text(text) is not None


def to_micro(tokens: Decimal) -> int | ErrorCode:
    """Converts a wire amount to micro-tokens, or says which rule it breaks.

    Returns ``amount_not_finite`` for NaN and infinities, ``too_many_decimals`` beyond 6 places,
    ``amount_too_large`` above ``AMOUNT_TOKENS_MAX``. The sign is left to the caller.
    """
    if not tokens.is_finite():
        return ErrorCode.amount_not_finite
    # Nothing here may use the decimal context's 28-digit precision: a long wire amount must be
    # refused, not raise. The common case first: a leading digit between 10^-6 and 10^12 keeps
    # the exact fraction small (as_integer_ratio is exact and needs no context).
    if _ADJUSTED_MIN <= tokens.adjusted() <= _ADJUSTED_MAX:
        numerator, denominator = tokens.as_integer_ratio()
        if denominator == 1:
            micro = numerator * MICRO_PER_TOKEN
        else:
            micro, rest = divmod(numerator * MICRO_PER_TOKEN, denominator)
            if rest:
                return ErrorCode.too_many_decimals
        if -_MICRO_MAX <= micro <= _MICRO_MAX:
            return micro
        return ErrorCode.amount_too_large
    # Whole tokens need no look at the digits.
    if tokens == tokens.to_integral_value():
        if abs(tokens) > AMOUNT_TOKENS_MAX:
            return ErrorCode.amount_too_large
        return int(tokens) * MICRO_PER_TOKEN
    _, digits, exponent = tokens.as_tuple()
    assert isinstance(exponent, int)
    if exponent < -DECIMALS_MAX:
        # Trailing zeros are not decimals: 1.50000000 has one decimal place.
        zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
        if exponent + zeros < -DECIMALS_MAX:
            return ErrorCode.too_many_decimals
    if abs(tokens) > AMOUNT_TOKENS_MAX:
        return ErrorCode.amount_too_large
    # At most 13 integer digits and 6 decimals: scaling and int() are exact.
    return int(tokens.scaleb(DECIMALS_MAX))


def positive_micro(tokens: Decimal) -> int | ErrorCode:
    """Like ``to_micro`` but zero and negatives are ``amount_must_be_positive``."""
    micro = to_micro(tokens)
    if isinstance(micro, ErrorCode):
        return micro
    if micro <= 0:
        return ErrorCode.amount_must_be_positive
    return micro


def format_micro(micro: int) -> str:
    """Formats micro-tokens as the shortest exact decimal string: 237600000 -> "237.6"."""
    if micro < 0:
        return "-" + format_micro(-micro)
    if micro % MICRO_PER_TOKEN == 0:
        return str(micro // MICRO_PER_TOKEN)
    # Fewest operations (this formats every balance in every reply): the digits once, then the
    # point put in by slicing; below one token a leading 1 pads the fraction to 6 digits.
    if micro < MICRO_PER_TOKEN:
        return f"0.{str(micro + MICRO_PER_TOKEN)[1:].rstrip('0')}"
    digits = str(micro)
    return f"{digits[:-DECIMALS_MAX]}.{digits[-DECIMALS_MAX:].rstrip('0')}"


def micro_of_text(text: str) -> int:
    """The micro-tokens of an amount the exchange wrote (``format_micro``): the inverse of it,
    for a client reading a reply. Not for untrusted input (a bad amount is an AssertionError)."""
    micro = to_micro(Decimal(text))
    assert isinstance(micro, int), f"the exchange wrote a bad amount {text!r}"
    return micro


def format_amount(tokens: Decimal, micro: int) -> str:
    """``format_micro(micro)`` for an amount ``to_micro`` gave ``micro`` from ``tokens``.

    Most amounts arrive already in the shortest form ("2.5", "10"); then the Decimal's own text
    is the answer, and taking it costs a fraction of formatting the integer. Only an exponent
    ("1E+1") or trailing zeros after the point ("2.50") need the general formatting.
    """
    text = str(tokens)
    if "E" in text or ("." in text and text[-1] == "0") or text[0] == "-":
        return format_micro(micro)
    return text


def tokens_of(micro: int) -> Decimal:
    """The exact Decimal number of tokens for a micro-token integer."""
    return Decimal(micro).scaleb(-DECIMALS_MAX)
