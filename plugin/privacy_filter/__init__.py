"""privacy-filter: find people in video and hide them, or hide everything but them.

Data flows one way: ``decode`` → ``stage`` (``engines`` + ``effects``) → ``encode``.
"""

__version__ = "0.1.0"
