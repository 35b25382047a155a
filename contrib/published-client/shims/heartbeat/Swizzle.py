"""The client maps type "Swizzle" to ``heartbeat.Swizzle.Swizzle`` (a C++ extension in the
original).  Our node only ever sends "Merkle"; using this stand-in is an error."""


class Swizzle:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("the Swizzle heartbeat is not provided by this shim")

    @staticmethod
    def fromdict(d):
        raise NotImplementedError("the node sent type Swizzle; downstream-tx only speaks Merkle")
