"""Chain layer: DR market contracts, chain client, embedded chain."""
