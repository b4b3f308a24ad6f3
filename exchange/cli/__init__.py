"""The ``exchange`` command line: ``main.py`` (the parser and each verb), ``verbs.py`` (the verbs
that talk to a running exchange), ``doctor.py``, ``local.py`` (finding a local exchange) and
``render.py`` (JSON and rich output)."""
