"""`drgw demo`: the whole loop on embedded defaults (simulated home, local broker, embedded chain)."""
