"""IPP at the cloud's edge: an RFC 8010 codec, the attribute mapping and the IPP front.

``codec`` and ``attributes`` are plain Python (the Manager's ``ipp`` driver uses them too);
``front`` is the ASGI app the service mounts at ``/ipp``. See docs/ipp.md.
"""
