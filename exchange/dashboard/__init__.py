"""The web dashboard (``exchange dashboard``): a live page fed from the exchange's events and
queries, read as any client reads them, and the same page for a simulation's results.

``model`` folds what is seen into the page's document (``view``); ``feed`` watches the exchange;
``simulation`` reads ``exchange simulate --out``; ``hub`` and ``server`` serve the document and
the static page (``static/``: no CDN, no build step); ``cli`` is the verb.
"""
