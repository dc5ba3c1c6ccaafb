"""A gateway's first configuration, shared by `drgw init` and `drgw provision`: the installer's
answers checked (answers), drgw.toml rendered from them (config_text), and the keys, TLS key, CSR
and config written all or nothing (files)."""

from gateway.ops.provisioning.answers import (
    DEFAULT_CONFIG,
    DEFAULT_STATE_DIR,
    ChainAnswers,
    DevicesDraft,
    Setup,
    check_address,
    check_broker,
    check_ca,
    check_rpc,
    parse_draft,
    reject_private_key,
)
from gateway.ops.provisioning.config_text import BUNDLE_MARK, render_config, toml_str
from gateway.ops.provisioning.files import Outcome, apply, make_csr, prepare, stamp, write_atomic

__all__ = ["BUNDLE_MARK", "DEFAULT_CONFIG", "DEFAULT_STATE_DIR", "ChainAnswers", "DevicesDraft",
           "Outcome", "Setup", "apply", "check_address", "check_broker", "check_ca", "check_rpc",
           "make_csr", "parse_draft", "prepare", "reject_private_key", "render_config", "stamp",
           "toml_str", "write_atomic"]
