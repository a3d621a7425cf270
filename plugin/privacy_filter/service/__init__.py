"""``privacy-filter run``: every stream of a config as supervised worker processes.

``state`` (what workers share), ``workers`` (decode, stage, encode bodies), ``supervisor``
(starts, watches and restarts them).  The guarantees are in ``supervisor``'s docstring.
"""
