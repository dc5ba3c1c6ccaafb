"""Pure domain logic: profiles, register codecs, read planning, records. No I/O, no clock."""
