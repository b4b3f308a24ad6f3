"""Integrations that reward work done outside the exchange: git commits and beads issues.

Modules: ``sender`` (reaching a running exchange as ``admin``: the ``RewardSender`` interface and
its implementation on ``protocols.client``), ``git_hook`` (the post-commit hook and its spool),
``beads`` (``.beads/issues.jsonl``, previews and sync), ``cli`` (``exchange hook …`` and
``exchange issues …``). Nothing here is imported by the daemon or the core; this package must not
import ``cli`` at import time (``python -m exchange.integrations.cli`` runs it as ``__main__``), and
never imports ``exchange.cli``, which runs these commands: what both need (finding the exchange,
printing) is in ``exchange.locate`` and ``exchange.render``.
"""
