"""Operating a running gateway: health counters, the Prometheus endpoint, journald logging."""
