"""The agent behind `drgw run`: wiring, the measurement pipeline and remote control."""
