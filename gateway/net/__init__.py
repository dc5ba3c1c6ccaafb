"""Network layer: MQTT publisher, fleet commands, topic contract."""
