"""Test support: stack builders, brokers, real-process harnesses and document makers.

No tests live here; test modules import from here and from tests/conftest.py's fixtures,
never from each other.
"""
