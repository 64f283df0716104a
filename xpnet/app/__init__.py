"""The application: the ``xpnet`` command, training runs and their folders, benchmarks.

Everything here is built on the library below it (``xpnet.nn``, ``xpnet.models``,
``xpnet.optim``, ``xpnet.train``, ``xpnet.checkpoint``, ``xpnet.data``, ``xpnet.backend``),
which never imports this package, parses arguments or prints.
"""
