from twisted.application.service import ServiceMaker

downstream = ServiceMaker(
    "downstream-tx",
    "downstream_tx.tap",
    "A proof-of-storage verification node (downstream-tx).",
    "downstream",
)
