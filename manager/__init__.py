"""The Cloud Print Manager: the device-side agent of cloudimaging (PWG Cloud Imaging Model).

It holds one outbound MQTT-over-TLS session to the broker, fetches and acknowledges jobs,
downloads documents by presigned URL, prints them through a driver and reports status.
See docs/manager.md.
"""

from manager.app import Manager
from manager.config import ConfigError, ManagerConfig, PrintServiceConfig, load_config, parse_config

__all__ = ["ConfigError", "Manager", "ManagerConfig", "PrintServiceConfig", "load_config", "parse_config"]
