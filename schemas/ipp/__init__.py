"""IPP on the wire (RFC 8010) and the mapping between IPP attributes and this project's tickets.

Pure Python, used by both edges: the service's IPP front (cloud_service.ipp.front) and the
Manager's ``ipp`` driver (manager.drivers.ipp). See docs/ipp.md.
"""
