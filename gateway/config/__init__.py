"""The gateway's files on disk: the config file (`drgw.toml`) read strictly into typed sections."""

from gateway.config.gateway import (
    BusConfig,
    DeviceConfig,
    DevicesConfig,
    GatewayConfig,
    MetricsConfig,
    MqttConfig,
    StoreConfig,
    load_config,
    parse_config,
)

__all__ = ["BusConfig", "DeviceConfig", "DevicesConfig", "GatewayConfig", "MetricsConfig", "MqttConfig",
           "StoreConfig", "load_config", "parse_config"]
