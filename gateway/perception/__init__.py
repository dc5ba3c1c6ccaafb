"""Perception: profiles, register codecs, the read planner, decoders: words in, typed readings out."""
