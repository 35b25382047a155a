"""Periodic work, each job on a LoopingCall driven by an injected clock."""
