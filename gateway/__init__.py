"""drgw: the edge gateway and metering agent of a blockchain-backed demand-response system."""

__version__ = "0.1.0"
