"""The little of the protobuf wire format that the floor server and the load process
need without generated classes: varints, tags and length-delimited fields.

There is no schema here: callers name the field numbers (from protos/credit/v1/). Only
the top level of a message is read; a nested message comes back as its bytes."""

from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5
_FIXED_SIZE = {I64: 8, I32: 4}
_TWO_63 = 1 << 63
_TWO_64 = 1 << 64


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise WireError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def parse_fields(data: bytes) -> dict[int, int | bytes]:
    """Top-level fields of one message: field number -> its last value (proto3: the last
    one wins), an int for a varint, bytes for a length-delimited field. Fixed-width
    fields are checked and skipped; groups are refused."""
    fields: dict[int, int | bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        tag = data[pos]
        if tag < 0x80:
            pos += 1
        else:
            tag, pos = read_varint(data, pos)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError("field number 0")
        if wire_type == VARINT:
            byte = data[pos] if pos < end else 0x80
            if byte < 0x80:
                fields[number] = byte
                pos += 1
            else:
                fields[number], pos = read_varint(data, pos)
        elif wire_type == LEN:
            length = data[pos] if pos < end else 0x80
            if length < 0x80:
                pos += 1
            else:
                length, pos = read_varint(data, pos)
            if pos + length > end:
                raise WireError(f"field {number}: length {length} runs past the end")
            fields[number] = data[pos:pos + length]
            pos += length
        elif wire_type in _FIXED_SIZE:
            pos += _FIXED_SIZE[wire_type]
            if pos > end:
                raise WireError(f"field {number}: truncated fixed-width value")
        else:
            raise WireError(f"field {number}: unsupported wire type {wire_type}")
    return fields


def varint_of(fields: dict[int, int | bytes], number: int) -> int:
    """Field `number` of what parse_fields read, as a varint; 0 when absent (proto3's default)."""
    value = fields.get(number, 0)
    if not isinstance(value, int):
        raise WireError(f"field {number} is length-delimited, not a varint")
    return value


def bytes_of(fields: dict[int, int | bytes], number: int) -> bytes:
    """Field `number` of what parse_fields read, as bytes; empty when absent (proto3's default)."""
    value = fields.get(number, b"")
    if not isinstance(value, bytes):
        raise WireError(f"field {number} is a varint, not length-delimited")
    return value


def as_int64(value: int) -> int:
    """A varint read as a signed int64 (negative numbers are ten-byte two's complement)."""
    return value - _TWO_64 if value >= _TWO_63 else value


def encode_varint(value: int) -> bytes:
    if value < 0:
        value += _TWO_64
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def varint_field(number: int, value: int) -> bytes:
    """A varint field; empty for 0, the proto3 default."""
    if value == 0:
        return b""
    return encode_varint(number << 3 | VARINT) + encode_varint(value)


def bytes_field(number: int, value: bytes) -> bytes:
    """A length-delimited field (string, bytes or nested message); empty when empty."""
    if not value:
        return b""
    return encode_varint(number << 3 | LEN) + encode_varint(len(value)) + value
