"""Device layer: one asyncio owner per physical bus, transports, Modbus client codec."""
