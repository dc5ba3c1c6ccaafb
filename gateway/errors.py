"""Error kinds shared by every layer: our misuse or bad input (local) versus a misbehaving peer (remote).

In the style of h11's LocalProtocolError / RemoteProtocolError: library exceptions are translated once,
at the edge, into one of these, and the message names the file, field or peer and the fix.
"""

from __future__ import annotations


class DrgwError(Exception):
    """Base of every error drgw raises on purpose. `exit_code` is what the CLI exits with."""

    exit_code = 1


class ConfigError(DrgwError):
    """Bad configuration or data file: names the file, the key and the fix."""

    exit_code = 2


class ProfileError(ConfigError):
    """A device profile that fails validation."""


class RemoteError(DrgwError):
    """A peer misbehaved: bad CRC, wrong length, exception response, no answer."""

    exit_code = 3
