"""Cache values readable only by a caller who holds the input they were computed from.

A prediction cache shared by tenants (Redis) may hold more than scores: the audio service's
entries carry the call's transcript. The cache key is a digest of the input, so anyone who
can read the store could read every transcript in it. Sealing an entry with a key derived
from the input itself (a different digest than the cache key's, which cannot be computed
from it) means only a request carrying the same input can open it.

Construction (standard library only): a fresh 16-byte nonce per entry, a SHAKE-256
keystream of `key || nonce` XORed with the value, and an HMAC-SHA256 tag over nonce and
ciphertext (encrypt-then-MAC). A value that fails to open is a cache miss, never an error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Final

_VERSION: Final = b"S1"
_NONCE_BYTES: Final = 16
_TAG_BYTES: Final = 32


class UnsealError(ValueError):
    """The value was not sealed with this key, or was changed since."""


def _keystream_xor(key: bytes, nonce: bytes, data: bytes) -> bytes:
    stream = hashlib.shake_256(key + nonce).digest(len(data))
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(len(data), "big")


def seal(key: bytes, value: bytes) -> bytes:
    """`value` encrypted and authenticated under `key` (32 bytes or more)."""
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = _keystream_xor(key, nonce, value)
    tag = hmac.new(key, nonce + ciphertext, hashlib.sha256).digest()
    return _VERSION + nonce + tag + ciphertext


def unseal(key: bytes, sealed: bytes) -> bytes:
    """The value `seal` sealed under `key`; `UnsealError` for anything else."""
    header = len(_VERSION) + _NONCE_BYTES + _TAG_BYTES
    if len(sealed) < header or not sealed.startswith(_VERSION):
        raise UnsealError("not a sealed cache value")
    nonce = sealed[len(_VERSION) : len(_VERSION) + _NONCE_BYTES]
    tag = sealed[len(_VERSION) + _NONCE_BYTES : header]
    ciphertext = sealed[header:]
    expected = hmac.new(key, nonce + ciphertext, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise UnsealError("the cache value does not open with this input's key")
    return _keystream_xor(key, nonce, ciphertext)
