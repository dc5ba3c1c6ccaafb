"""Operating a gateway: first configuration (provisioning), installation checks (doctor), health
counters, the Prometheus endpoint, journald logging and the systemd notify protocol."""
