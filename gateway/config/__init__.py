"""The gateway's files on disk, read strictly into typed values: the config file, device profiles."""

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
