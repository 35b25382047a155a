"""Bitcoin addresses and signed messages, compatible with siggy 0.1.0.

The ``/new`` route can require a farmer to prove ownership of its SJCX
(bitcoin mainnet P2PKH) address by posting a message signed with the
address's key in the classic "Bitcoin Signed Message" format.  This module
re-implements the check the original server did with siggy (docs/protocol-v1.md,
Signatures), on top of libsecp256k1 (``coincurve``):

* the signature is 88 characters of base64 that decode to 65 bytes:
  a header byte followed by ``r`` and ``s`` (32 bytes each, big-endian);
* the header byte (recovery id / compressed flag) is **ignored**, as siggy
  does: the public key is recovered for ``x = r`` with both ``y`` parities
  (the ``x = r + n`` candidates are never tried), and each candidate must
  pass an ordinary ECDSA verification;
* the address matches when the hash160 of either SEC form (compressed or
  uncompressed) of a candidate equals the address's hash160.

A bad signature or message never raises (the answer is ``False``).  An
address that is not a valid mainnet P2PKH address raises
:class:`InvalidAddress` -- siggy raised there too, and the original server
turned that into a 500; callers here should turn it into a 400.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct

import base58
import coincurve

__all__ = [
    "ADDRESS_VERSION",
    "MAX_ADDRESS_LENGTH",
    "MAX_MESSAGE_LENGTH",
    "SIGNATURE_LENGTH",
    "InvalidAddress",
    "address_from_pubkey",
    "decode_address",
    "hash160",
    "is_valid_address",
    "message_digest",
    "ripemd160",
    "sign_message",
    "varint",
    "verify_message",
]

#: Length in characters of a base64 signed-message signature: 4*ceil(65/3).
SIGNATURE_LENGTH = 88

#: The /new route refuses messages longer than this many characters
#: (``MAX_SIG_MESSAGE_SIZE`` of the original server).  :func:`verify_message`
#: itself does not enforce it, exactly like siggy.
MAX_MESSAGE_LENGTH = 1024

#: Version byte of bitcoin mainnet pay-to-pubkey-hash addresses (SJCX).
ADDRESS_VERSION = 0x00

#: Input cap before base58 decoding.  A 21-byte payload plus a 4-byte
#: checksum encodes to at most 34 characters; anything much longer is
#: refused without doing big-integer work on it.
MAX_ADDRESS_LENGTH = 64

_MAGIC = b"\x18Bitcoin Signed Message:\n"
_B58_ALPHABET = frozenset(base58.BITCOIN_ALPHABET.decode("ascii"))

# secp256k1 group order.
_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_HALF_N = _N // 2


class InvalidAddress(ValueError):
    """The string is not a valid bitcoin mainnet P2PKH (SJCX) address."""


# ---------------------------------------------------------------------------
# hashing


def _rol(x: int, n: int) -> int:
    return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF


# RIPEMD-160 tables (Dobbertin, Bosselaers, Preneel, 1996).
_RMD_R = (
    0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15,
    7, 4, 13, 1, 10, 6, 15, 3, 12, 0, 9, 5, 2, 14, 11, 8,
    3, 10, 14, 4, 9, 15, 8, 1, 2, 7, 0, 6, 13, 11, 5, 12,
    1, 9, 11, 10, 0, 8, 12, 4, 13, 3, 7, 15, 14, 5, 6, 2,
    4, 0, 5, 9, 7, 12, 2, 10, 14, 1, 3, 8, 11, 6, 15, 13,
)
_RMD_RP = (
    5, 14, 7, 0, 9, 2, 11, 4, 13, 6, 15, 8, 1, 10, 3, 12,
    6, 11, 3, 7, 0, 13, 5, 10, 14, 15, 8, 12, 4, 9, 1, 2,
    15, 5, 1, 3, 7, 14, 6, 9, 11, 8, 12, 2, 10, 0, 4, 13,
    8, 6, 4, 1, 3, 11, 15, 0, 5, 12, 2, 13, 9, 7, 10, 14,
    12, 15, 10, 4, 1, 5, 8, 7, 6, 2, 13, 14, 0, 3, 9, 11,
)
_RMD_S = (
    11, 14, 15, 12, 5, 8, 7, 9, 11, 13, 14, 15, 6, 7, 9, 8,
    7, 6, 8, 13, 11, 9, 7, 15, 7, 12, 15, 9, 11, 7, 13, 12,
    11, 13, 6, 7, 14, 9, 13, 15, 14, 8, 13, 6, 5, 12, 7, 5,
    11, 12, 14, 15, 14, 15, 9, 8, 9, 14, 5, 6, 8, 6, 5, 12,
    9, 15, 5, 11, 6, 8, 13, 12, 5, 12, 13, 14, 11, 8, 5, 6,
)
_RMD_SP = (
    8, 9, 9, 11, 13, 15, 15, 5, 7, 7, 8, 11, 14, 14, 12, 6,
    9, 13, 15, 7, 12, 8, 9, 11, 7, 7, 12, 7, 6, 15, 13, 11,
    9, 7, 15, 11, 8, 6, 6, 14, 12, 13, 5, 14, 13, 13, 7, 5,
    15, 5, 8, 11, 14, 14, 6, 14, 6, 9, 12, 9, 12, 5, 15, 8,
    8, 5, 12, 9, 12, 5, 14, 6, 8, 13, 6, 5, 15, 13, 11, 11,
)
_RMD_K = (0x00000000, 0x5A827999, 0x6ED9EBA1, 0x8F1BBCDC, 0xA953FD4E)
_RMD_KP = (0x50A28BE6, 0x5C4DD124, 0x6D703EF3, 0x7A6D76E9, 0x00000000)


def _rmd_f(rnd: int, x: int, y: int, z: int) -> int:
    if rnd == 0:
        return x ^ y ^ z
    if rnd == 1:
        return (x & y) | (~x & z)
    if rnd == 2:
        return (x | ~y) ^ z
    if rnd == 3:
        return (x & z) | (y & ~z)
    return x ^ (y | ~z)


def _ripemd160_py(data: bytes) -> bytes:
    """Pure-Python RIPEMD-160, for OpenSSL builds without the algorithm."""
    h = [0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0]
    mask = 0xFFFFFFFF
    msg = bytes(data) + b"\x80"
    msg += b"\x00" * ((56 - len(msg)) % 64)
    msg += struct.pack("<Q", (len(data) * 8) & 0xFFFFFFFFFFFFFFFF)
    for off in range(0, len(msg), 64):
        x = struct.unpack("<16I", msg[off:off + 64])
        al, bl, cl, dl, el = h
        ar, br, cr, dr, er = h
        for j in range(80):
            rnd = j // 16
            t = al + (_rmd_f(rnd, bl, cl, dl) & mask) + x[_RMD_R[j]] + _RMD_K[rnd]
            t = (_rol(t & mask, _RMD_S[j]) + el) & mask
            al, el, dl, cl, bl = el, dl, _rol(cl, 10), bl, t
            t = ar + (_rmd_f(4 - rnd, br, cr, dr) & mask) + x[_RMD_RP[j]] + _RMD_KP[rnd]
            t = (_rol(t & mask, _RMD_SP[j]) + er) & mask
            ar, er, dr, cr, br = er, dr, _rol(cr, 10), br, t
        t = (h[1] + cl + dr) & mask
        h[1] = (h[2] + dl + er) & mask
        h[2] = (h[3] + el + ar) & mask
        h[3] = (h[4] + al + br) & mask
        h[4] = (h[0] + bl + cr) & mask
        h[0] = t
    return struct.pack("<5I", *h)


def _hashlib_has_ripemd160() -> bool:
    try:
        hashlib.new("ripemd160", b"")
    except (ValueError, TypeError):
        return False
    return True


_HASHLIB_RIPEMD160 = _hashlib_has_ripemd160()


def ripemd160(data: bytes) -> bytes:
    """RIPEMD-160 of ``data`` (hashlib when OpenSSL offers it, else pure Python)."""
    if _HASHLIB_RIPEMD160:
        return hashlib.new("ripemd160", data).digest()
    return _ripemd160_py(data)


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)), the 20-byte hash inside a P2PKH address."""
    return ripemd160(hashlib.sha256(data).digest())


# ---------------------------------------------------------------------------
# addresses


def decode_address(address: str) -> bytes:
    """Return the 20-byte hash160 inside a mainnet P2PKH base58check address.

    Raises :class:`InvalidAddress` (a ``ValueError``) with a human-readable
    message for anything else: non-strings, over-long input, characters
    outside the base58 alphabet (whitespace included), a bad checksum, a
    payload that is not 21 bytes, or a version byte other than 0x00
    (testnet, P2SH, ...).
    """
    if not isinstance(address, str):
        raise InvalidAddress("address must be a string")
    if not address:
        raise InvalidAddress("address is empty")
    if len(address) > MAX_ADDRESS_LENGTH:
        raise InvalidAddress("address is too long")
    if not set(address) <= _B58_ALPHABET:
        raise InvalidAddress("address contains characters that are not base58")
    try:
        payload = base58.b58decode_check(address)
    except ValueError:
        raise InvalidAddress("address checksum does not match") from None
    if len(payload) != 21:
        raise InvalidAddress("address has the wrong length")
    if payload[0] != ADDRESS_VERSION:
        raise InvalidAddress(
            "address is not a bitcoin mainnet pay-to-pubkey-hash address "
            f"(version byte {payload[0]:#04x}, expected 0x00)"
        )
    return payload[1:]


def is_valid_address(address: object) -> bool:
    """True if ``address`` is a valid mainnet P2PKH (SJCX) address."""
    try:
        decode_address(address)  # type: ignore[arg-type]
    except InvalidAddress:
        return False
    return True


def address_from_pubkey(pubkey_bytes: bytes) -> str:
    """Mainnet P2PKH address of a SEC-encoded public key (33 or 65 bytes).

    The key bytes are hashed as given, so the compressed and uncompressed
    encodings of one key give two different addresses.
    """
    payload = bytes([ADDRESS_VERSION]) + hash160(bytes(pubkey_bytes))
    return base58.b58encode_check(payload).decode("ascii")


# ---------------------------------------------------------------------------
# signed messages


def varint(n: int) -> bytes:
    """Bitcoin CompactSize encoding of a non-negative integer."""
    if n < 0:
        raise ValueError("varint of a negative number")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def message_digest(message: str) -> bytes:
    """Double SHA-256 of the "Bitcoin Signed Message" envelope of ``message``.

    ``message`` is encoded as UTF-8 (bytes are used as they are).
    """
    m = message if isinstance(message, bytes) else message.encode("utf-8")
    data = _MAGIC + varint(len(m)) + m
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def _der_int(v: int) -> bytes:
    raw = v.to_bytes((v.bit_length() + 8) // 8, "big")  # room for a sign bit
    return b"\x02" + bytes([len(raw)]) + raw


def _der_signature(r: int, s: int) -> bytes:
    body = _der_int(r) + _der_int(s)
    return b"\x30" + bytes([len(body)]) + body


def _decode_signature(signature: object) -> tuple[int, int] | None:
    """``(r, s)`` of an 88-character base64 signature, or None."""
    if isinstance(signature, str):
        try:
            sig = signature.encode("ascii")
        except UnicodeEncodeError:
            return None
    elif isinstance(signature, (bytes, bytearray)):
        sig = bytes(signature)
    else:
        return None
    if len(sig) != SIGNATURE_LENGTH:
        return None
    try:
        binsig = base64.b64decode(sig, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(binsig) != 65:
        return None
    # binsig[0], the header byte, is ignored on purpose (siggy compatibility).
    r = int.from_bytes(binsig[1:33], "big")
    s = int.from_bytes(binsig[33:65], "big")
    if not (0 < r < _N and 0 < s < _N):
        return None
    return r, s


def sign_message(secret: bytes, message: str) -> tuple[str, str]:
    """``(address, signature)``: ``message`` signed with the private key ``secret`` (32 bytes) as a
    bitcoin wallet signs a message, for the address of its compressed public key. The node never
    signs; farmers' tools and the tests do (the header byte says "compressed key" and carries the
    recovery id, as wallets write it, though :func:`verify_message` ignores it)."""
    key = coincurve.PrivateKey(secret)
    signed = key.sign_recoverable(message_digest(message), hasher=None)  # r ‖ s ‖ recovery id
    header = 27 + 4 + signed[64]
    address = address_from_pubkey(key.public_key.format(compressed=True))
    return address, base64.b64encode(bytes([header]) + signed[:64]).decode("ascii")


def verify_message(address: str, message: str, signature: str) -> bool:
    """siggy-compatible check that ``signature`` signs ``message`` for ``address``.

    Returns False for any malformed, non-matching or wrongly typed signature
    or message; raises :class:`InvalidAddress` when ``address`` is not a
    valid mainnet P2PKH address (checked first, whatever the signature).
    """
    wanted = decode_address(address)
    rs = _decode_signature(signature)
    if rs is None:
        return False
    r, s = rs
    try:
        digest = message_digest(message)
    except (AttributeError, TypeError, UnicodeError):
        return False

    # libsecp256k1 only verifies low-s signatures.  Recovering from (r, n-s)
    # with both y parities gives the same two candidate keys as (r, s), and
    # ECDSA verification of the two is equivalent, so normalise first.
    if s > _HALF_N:
        s = _N - s
    rs_bytes = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    der = _der_signature(r, s)

    for recid in (0, 1):  # x = r, both y parities; never x = r + n
        key = _recover(rs_bytes + bytes([recid]), der, digest)
        if key is None:
            continue
        for compressed in (True, False):
            if hash160(key.format(compressed=compressed)) == wanted:
                return True
    return False


def _recover(
    recoverable: bytes, der: bytes, digest: bytes
) -> coincurve.PublicKey | None:
    """Public key recovered from ``r || s || recid`` that also ECDSA-verifies.

    None when libsecp256k1 finds no such key (no curve point for x = r,
    point at infinity, ...).
    """
    try:
        key = coincurve.PublicKey.from_signature_and_message(
            recoverable, digest, hasher=None
        )
        ok = key.verify(der, digest, hasher=None)
    except Exception:  # noqa: BLE001 - any refusal by libsecp256k1 is "no key"
        return None
    return key if ok else None
