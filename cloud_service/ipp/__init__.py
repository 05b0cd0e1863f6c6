"""IPP at the cloud's edge: the IPP Everywhere front the service mounts at ``/ipp``.

The codec and the attribute mapping it speaks are shared with the Manager and live in
schemas.ipp. See docs/ipp.md.
"""
