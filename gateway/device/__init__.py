"""The device layer: one asyncio owner per bus (Modbus RTU/TCP, DL/T 645), transports, schedulers, probes."""
