"""Readable preset fragments (``cctv.yaml``, ``video-call.yaml``), shipped as package data."""
