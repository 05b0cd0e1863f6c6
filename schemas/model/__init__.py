"""The PWG Cloud Imaging model, pure: no I/O, shared by the service, the Manager and the client.

States and transitions of jobs, documents and services (PWG 5108.01), ticket validation for
print, scan and FaxOut (PWG 5100.x), the judgement of device reports, retention rules and page
counting. Everything here is plain data in, plain data out; MQTT, HTTP, SQL and the object store
are adapters around it (docs/architecture.md).
"""
