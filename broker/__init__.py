"""The MQTT broker side: the embedded amqtt broker and what any broker needs from us.

- ``broker.pki``: the private CA and server certificate (shared with the HTTPS service);
- ``broker.credentials``: the password file devices and the service authenticate against;
- ``broker.acl``: who may connect as whom and touch which topic (pure rules);
- ``broker.plugins``: those rules as amqtt 0.12.1 auth and topic plugins;
- ``broker.embedded``: ``EmbeddedBroker``, amqtt behind a TLS listener and a CONNECT gate;
- ``broker.cli``: the ``cloudimaging broker`` verb.

Mosquitto and cluster brokers: deploy/mosquitto and docs/brokers.md.
"""
