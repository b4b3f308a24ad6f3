"""Demos of the whole system: ``exchange demo auction`` (see ``auction.py``)."""
