"""Tests for downstream_tx.bitcoin (siggy-compatible signed-message checks)."""

from __future__ import annotations

import base64
import hashlib

import base58
import coincurve
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downstream_tx import bitcoin
from downstream_tx.bitcoin import (
    MAX_MESSAGE_LENGTH,
    SIGNATURE_LENGTH,
    InvalidAddress,
    address_from_pubkey,
    decode_address,
    hash160,
    is_valid_address,
    message_digest,
    verify_message,
)

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

SPEC_ADDRESS = "19qVgG8C6eXwKMMyvVegsi3xCsKyk3Z3jV"
SPEC_MESSAGE = "test message"
SPEC_SIGNATURE = (
    "HyzVUenXXo4pa+kgm1vS8PNJM83eIXFC5r0q86FGbqFcdla6rcw72/ciXiEPfjli3ENfwWuESHhv6K9esI0dl5I="
)


# -- helpers ---------------------------------------------------------------


def make_key(secret: int) -> coincurve.PrivateKey:
    return coincurve.PrivateKey.from_int(secret)


def address_of(key: coincurve.PrivateKey, compressed: bool = True) -> str:
    return address_from_pubkey(key.public_key.format(compressed=compressed))


def sign(key: coincurve.PrivateKey, message: str, compressed: bool = True) -> str:
    """Bitcoin Core style signed message: header 27 + recid (+4 compressed)."""
    rec = key.sign_recoverable(message_digest(message), hasher=None)
    rs, recid = rec[:64], rec[64]
    header = 27 + recid + (4 if compressed else 0)
    return base64.b64encode(bytes([header]) + rs).decode("ascii")


def with_binsig(signature: str, edit) -> str:
    binsig = bytearray(base64.b64decode(signature))
    edit(binsig)
    return base64.b64encode(bytes(binsig)).decode("ascii")


def raw_signature(header: int, r: int, s: int) -> str:
    return base64.b64encode(
        bytes([header]) + r.to_bytes(32, "big") + s.to_bytes(32, "big")
    ).decode("ascii")


KEY = make_key(0x1D_2C_3B_4A_59_68_77_86_95_A4_B3_C2_D1_E0_FF)


# -- constants -------------------------------------------------------------


def test_constants():
    assert SIGNATURE_LENGTH == 88
    assert MAX_MESSAGE_LENGTH == 1024
    assert len(SPEC_SIGNATURE) == SIGNATURE_LENGTH
    assert issubclass(InvalidAddress, ValueError)


# -- spec vector (§8) ------------------------------------------------------


def test_spec_vector_true():
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, SPEC_SIGNATURE) is True


def test_spec_vector_header_byte_zeroed_still_true():
    def zero(b):
        b[0] = 0

    zeroed = with_binsig(SPEC_SIGNATURE, zero)
    assert zeroed != SPEC_SIGNATURE
    assert len(zeroed) == SIGNATURE_LENGTH
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, zeroed) is True


@pytest.mark.parametrize("header", [0, 27, 28, 29, 30, 31, 32, 33, 34, 255])
def test_spec_vector_any_header_byte(header):
    def put(b):
        b[0] = header

    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, with_binsig(SPEC_SIGNATURE, put))


def test_spec_vector_other_message_false():
    assert verify_message(SPEC_ADDRESS, "test messagf", SPEC_SIGNATURE) is False


def test_spec_vector_other_address_false():
    assert verify_message(address_of(KEY), SPEC_MESSAGE, SPEC_SIGNATURE) is False


def test_spec_vector_high_s_still_true():
    """pycoin's verify accepts high-s signatures, so siggy did too."""
    binsig = base64.b64decode(SPEC_SIGNATURE)
    r = int.from_bytes(binsig[1:33], "big")
    s = int.from_bytes(binsig[33:65], "big")
    flipped = raw_signature(binsig[0], r, N - s)
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, flipped) is True
    assert verify_message(SPEC_ADDRESS, "test messagf", flipped) is False


# -- digest and varint -----------------------------------------------------


def test_message_digest_matches_manual_construction():
    m = SPEC_MESSAGE.encode()
    data = b"\x18Bitcoin Signed Message:\n" + bytes([len(m)]) + m
    expected = hashlib.sha256(hashlib.sha256(data).digest()).digest()
    assert message_digest(SPEC_MESSAGE) == expected
    assert len(message_digest("")) == 32


def test_message_digest_uses_utf8_byte_length():
    text = "\u00e9" * 127  # 127 characters, 254 UTF-8 bytes -> 3-byte varint
    m = text.encode("utf-8")
    data = b"\x18Bitcoin Signed Message:\n" + b"\xfd" + (254).to_bytes(2, "little") + m
    assert message_digest(text) == hashlib.sha256(hashlib.sha256(data).digest()).digest()


@pytest.mark.parametrize(
    ("n", "encoded"),
    [
        (0, b"\x00"),
        (252, b"\xfc"),
        (253, b"\xfd\xfd\x00"),
        (65535, b"\xfd\xff\xff"),
        (65536, b"\xfe\x00\x00\x01\x00"),
        (2**32 - 1, b"\xfe\xff\xff\xff\xff"),
        (2**32, b"\xff\x00\x00\x00\x00\x01\x00\x00\x00"),
    ],
)
def test_varint_boundaries(n, encoded):
    assert bitcoin.varint(n) == encoded


@pytest.mark.parametrize("length", [252, 253, 65535, 65536])
def test_varint_boundary_messages_sign_and_verify(length):
    message = "a" * length
    prefix = b"\x18Bitcoin Signed Message:\n" + bitcoin.varint(length)
    expected = hashlib.sha256(
        hashlib.sha256(prefix + message.encode()).digest()
    ).digest()
    assert message_digest(message) == expected
    sig = sign(KEY, message)
    assert verify_message(address_of(KEY), message, sig) is True
    assert verify_message(address_of(KEY), message[:-1], sig) is False
    assert verify_message(address_of(KEY), message + "a", sig) is False


# -- signatures made here --------------------------------------------------


@pytest.mark.parametrize("compressed", [True, False])
def test_own_signature_verifies(compressed):
    message = "I own this SJCX address"
    addr = address_of(KEY, compressed)
    sig = sign(KEY, message, compressed)
    assert len(sig) == SIGNATURE_LENGTH
    assert verify_message(addr, message, sig) is True
    assert verify_message(addr, message + ".", sig) is False


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=200), st.integers(1, N - 1))
def test_sign_message_signs_as_a_wallet_does(message, secret):
    """bitcoin.sign_message (for farmers' tools and tests) is the construction above, compressed key."""
    key = make_key(secret)
    assert bitcoin.sign_message(key.secret, message) == (address_of(key), sign(key, message))
    address, signature = bitcoin.sign_message(key.secret, message)
    assert verify_message(address, message, signature) is True


def test_compressed_and_uncompressed_addresses_differ_and_both_verify():
    message = "either form"
    sig = sign(KEY, message)
    a_c, a_u = address_of(KEY, True), address_of(KEY, False)
    assert a_c != a_u
    # The header's compressed flag is ignored: one signature checks both forms.
    assert verify_message(a_c, message, sig) is True
    assert verify_message(a_u, message, sig) is True


def test_wrong_address_false():
    message = "hello"
    sig = sign(KEY, message)
    other = make_key(12345)
    assert verify_message(address_of(other), message, sig) is False
    assert verify_message(address_of(other, False), message, sig) is False


def test_unicode_message():
    message = "z\u00fcrich \u2603 \U0001f600"
    sig = sign(KEY, message)
    assert verify_message(address_of(KEY), message, sig) is True


def test_bytes_signature_accepted():
    message = "bytes sig"
    sig = sign(KEY, message).encode("ascii")
    assert verify_message(address_of(KEY), message, sig) is True


# -- malformed signatures and messages ------------------------------------


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "A" * 87,
        "A" * 89,
        SPEC_SIGNATURE[:-1],
        SPEC_SIGNATURE + "=",
        "!" * 88,  # not base64
        "A" * 88,  # 66 bytes of zeros
        SPEC_SIGNATURE[:-2] + "==",  # bad padding
        SPEC_SIGNATURE[:40] + " " + SPEC_SIGNATURE[41:],  # whitespace inside
        "\u00e9" * 88,
        "\ud800" * 88,
        None,
        12345,
        ["x"] * 88,
    ],
)
def test_malformed_signatures_false(signature):
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, signature) is False


@pytest.mark.parametrize(
    ("r", "s"),
    [
        (0, 1),
        (1, 0),
        (0, 0),
        (N, 1),
        (1, N),
        (2**256 - 1, 1),
        (1, 2**256 - 1),
    ],
)
def test_out_of_range_r_s_false(r, s):
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, raw_signature(31, r, s)) is False


def test_r_not_an_x_coordinate_false():
    # Find a small r with no curve point (x^3 + 7 is not a square mod p).
    p = 2**256 - 2**32 - 977
    r = next(x for x in range(1, 100) if pow(x**3 + 7, (p - 1) // 2, p) != 1)
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE, raw_signature(27, r, 1)) is False


@pytest.mark.parametrize("message", [None, 42, "\ud800", ["test message"]])
def test_bad_messages_false(message):
    assert verify_message(SPEC_ADDRESS, message, SPEC_SIGNATURE) is False


def test_bytes_message_same_as_text():
    assert verify_message(SPEC_ADDRESS, SPEC_MESSAGE.encode(), SPEC_SIGNATURE) is True


# -- addresses -------------------------------------------------------------


def test_decode_spec_address():
    h = decode_address(SPEC_ADDRESS)
    assert len(h) == 20
    assert base58.b58encode_check(b"\x00" + h).decode() == SPEC_ADDRESS
    assert is_valid_address(SPEC_ADDRESS)


def test_address_from_pubkey_round_trip():
    for compressed in (True, False):
        pub = KEY.public_key.format(compressed=compressed)
        addr = address_from_pubkey(pub)
        assert addr.startswith("1")
        assert decode_address(addr) == hash160(pub)


def _b58check(payload: bytes) -> str:
    return base58.b58encode_check(payload).decode("ascii")


BAD_ADDRESSES = [
    pytest.param(_b58check(b"\x6f" + bytes(range(20))), id="testnet"),
    pytest.param(_b58check(b"\x05" + bytes(range(20))), id="p2sh"),
    pytest.param(_b58check(b"\x00" + bytes(range(19))), id="short-payload"),
    pytest.param(_b58check(b"\x00" + bytes(range(21))), id="long-payload"),
    pytest.param(SPEC_ADDRESS[:-1] + ("W" if SPEC_ADDRESS[-1] != "W" else "X"), id="checksum"),
    pytest.param(SPEC_ADDRESS[:-1], id="truncated"),
    pytest.param(SPEC_ADDRESS + " ", id="trailing-space"),
    pytest.param(" " + SPEC_ADDRESS, id="leading-space"),
    pytest.param(SPEC_ADDRESS + "\n", id="trailing-newline"),
    pytest.param("0" + SPEC_ADDRESS[1:], id="zero-char"),
    pytest.param("O" + SPEC_ADDRESS[1:], id="O-char"),
    pytest.param("", id="empty"),
    pytest.param("1", id="one"),
    pytest.param("1" * 25, id="all-ones"),
    pytest.param("1" * 65, id="too-long-ones"),
    pytest.param("z" * 10_000, id="huge"),
    pytest.param("\u00e9" + SPEC_ADDRESS, id="non-ascii"),
    pytest.param("\ud800", id="surrogate"),
    pytest.param(None, id="none"),
    pytest.param(SPEC_ADDRESS.encode(), id="bytes"),
    pytest.param(123, id="int"),
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_bad_addresses_raise_invalid_address(address):
    with pytest.raises(InvalidAddress) as info:
        decode_address(address)
    assert str(info.value)  # a human message for the 400 reply
    assert is_valid_address(address) is False


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_verify_with_bad_address_raises(address):
    with pytest.raises(InvalidAddress):
        verify_message(address, SPEC_MESSAGE, SPEC_SIGNATURE)


def test_bad_address_raises_even_with_bad_signature():
    testnet = _b58check(b"\x6f" + bytes(20))
    with pytest.raises(InvalidAddress):
        verify_message(testnet, SPEC_MESSAGE, "short")


def test_testnet_address_message_mentions_version():
    testnet = _b58check(b"\x6f" + bytes(20))
    with pytest.raises(InvalidAddress, match="0x6f"):
        decode_address(testnet)


# -- RIPEMD-160 ------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "digest"),
    [
        (b"", "9c1185a5c5e9fc54612808977ee8f548b2258d31"),
        (b"abc", "8eb208f7e05d987a9b044a8e98c6b087f15a0bfc"),
        (b"message digest", "5d0689ef49d2fae572b881b123a85ffa21595f36"),
        (
            b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
            "12a053384a9c0c88e405a06c27dcf49ada62eb2b",
        ),
        (b"a" * 1_000_000, "52783243c1697bdbe16d37f97f68f08325dc1528"),
    ],
)
def test_ripemd160_known_answers(data, digest):
    assert bitcoin.ripemd160(data).hex() == digest
    if len(data) <= 1000:  # the pure-Python fallback is slow on 1 MB
        assert bitcoin._ripemd160_py(data).hex() == digest


@pytest.mark.skipif(
    not bitcoin._HASHLIB_RIPEMD160, reason="hashlib has no ripemd160 to compare with"
)
@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=300))
def test_ripemd160_fallback_matches_hashlib(data):
    assert bitcoin._ripemd160_py(data) == bitcoin.ripemd160(data)


# -- property tests --------------------------------------------------------


B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=B58_ALPHABET, min_size=20, max_size=40)))
def test_decode_address_only_raises_invalid_address(text):
    try:
        h = decode_address(text)
    except InvalidAddress:
        assert is_valid_address(text) is False
    else:
        assert len(h) == 20
        assert is_valid_address(text) is True


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.text(),
        st.binary(),
        st.text(min_size=88, max_size=88),
        st.binary(min_size=65, max_size=65).map(lambda b: base64.b64encode(b).decode()),
        st.binary(min_size=88, max_size=88),
    ),
    st.text(),
)
def test_verify_message_never_raises_on_bad_signatures(signature, message):
    assert verify_message(SPEC_ADDRESS, message, signature) in (True, False)


@settings(max_examples=50, deadline=None)
@given(
    st.integers(min_value=1, max_value=N - 1),
    st.text(max_size=MAX_MESSAGE_LENGTH),
    st.booleans(),
)
def test_sign_verify_round_trip(secret, message, compressed):
    key = make_key(secret)
    sig = sign(key, message, compressed)
    addr = address_of(key, compressed)
    assert verify_message(addr, message, sig) is True
    assert verify_message(addr, message + "x", sig) is False
    assert verify_message(SPEC_ADDRESS, message, sig) is False
