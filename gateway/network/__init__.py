"""The network layer: the MQTT link, publishers, signed fleet commands, topics, HA discovery."""
