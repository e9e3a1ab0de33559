"""The generated module reads every scalar in both wire forms: as Celerity writes it
(bytes as base64 text, UUIDs, dates and datetimes as text, decimals in kombu's envelope)
and as Python Celery writes it (kombu's JSON envelopes, which Celery's decoding turns back
into Python objects); and a value it encodes comes back equal through kombu's JSON.
Exits non-zero on the first difference."""

import datetime
import decimal
import uuid

from kombu.utils import json as kombu_json

from fixture_scalars import Everything, _decode_Everything, _encode

ID = "6f1c2a52-6a4e-4e57-9b8a-0d6f1e7c1a11"

# As Celerity's serde writes an `Everything` (celerity::Bytes, chrono, uuid, Decimal).
from_celerity = kombu_json.loads(
    '{"flag": true, "small": -1, "big": 1099511627776, "count": 7, "total": 18446744073709551615,'
    ' "ratio": 0.5, "price": {"__type__": "decimal", "__value__": "0.1"}, "text": "\\u00fc",'
    ' "blob": "aGk=", "id": "' + ID + '", "at": "2026-11-29T12:30:00Z", "day": "2026-11-29",'
    ' "extra": {"a": [1, null]}}'
)
value = _decode_Everything(from_celerity)
expected = Everything(
    flag=True,
    small=-1,
    big=2**40,
    count=7,
    total=2**64 - 1,
    ratio=0.5,
    price=decimal.Decimal("0.1"),
    text="ü",
    blob=b"hi",
    id=uuid.UUID(ID),
    at=datetime.datetime(2026, 11, 29, 12, 30, tzinfo=datetime.UTC),
    day=datetime.date(2026, 11, 29),
    extra={"a": [1, None]},
)
assert value == expected, (value, expected)
# Exact on this side too: no float came in between.
assert value.price + decimal.Decimal("0.2") == decimal.Decimal("0.3"), value.price

# As Python Celery writes it: kombu's envelopes, decoded by Celery into Python objects.
through_kombu = kombu_json.loads(kombu_json.dumps(_encode(expected)))
assert isinstance(through_kombu["price"], decimal.Decimal), through_kombu
assert _decode_Everything(through_kombu) == expected, through_kombu
# The same envelopes read without Celery's decoding.
raw = kombu_json.loads(kombu_json.dumps(_encode(expected)), object_hook=None)
assert raw["price"] == {"__type__": "decimal", "__value__": "0.1"}, raw["price"]
assert _decode_Everything(raw) == expected, raw

# A naive datetime is UTC, as Celery reads one.
naive = dict(from_celerity, at="2026-11-29T12:30:00")
assert _decode_Everything(naive).at == expected.at

# A value of the wrong type is refused, naming what was expected.
try:
    _decode_Everything(dict(from_celerity, count="7"))
except TypeError as error:
    assert str(error) == "expected an integer, got '7'", error
else:
    raise AssertionError("a string was read as an integer")

print("ok")
