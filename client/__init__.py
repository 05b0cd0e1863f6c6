"""Python client and CLI of the Cloud Imaging HTTP API.

``CloudImagingClient`` (sync) and ``AsyncCloudImagingClient`` (asyncio) talk to the service;
``load_config`` finds the URL, token and CA the way the ``cloudimaging`` command does.
"""

from client.aio import AsyncCloudImagingClient
from client.api import CloudImagingClient
from client.config import ClientConfig, load_config
from client.errors import ApiError, ClientError, ConfigError, ConnectionFailed

__all__ = [
    "ApiError",
    "AsyncCloudImagingClient",
    "ClientConfig",
    "ClientError",
    "CloudImagingClient",
    "ConfigError",
    "ConnectionFailed",
    "load_config",
]
