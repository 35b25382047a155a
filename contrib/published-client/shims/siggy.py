"""Stand-in for ``siggy`` 0.1.0 on downstream_tx.bitcoin: ``verify_signature(message, signature,
address)``; like the original it raises for an address that is not a mainnet P2PKH address."""

from downstream_tx.bitcoin import verify_message

BIN_SIGNATURE_LENGTH = 65
SIGNATURE_LENGTH = 88


def verify_signature(message, signature, address):
    if len(signature) != SIGNATURE_LENGTH:
        return False
    return verify_message(address, message, signature)
