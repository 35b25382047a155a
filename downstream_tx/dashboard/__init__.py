"""The status dashboard: HTML pages for operators and farmers, rendered on the server.

``data`` gathers what a page shows through the node's stores (paged, bounded); ``render`` and
``charts`` turn it into HTML and SVG (pure functions, everything from outside escaped); ``static/``
holds the stylesheet, the refresh script and the icon the pages load (no inline script or style,
no CDN). The routes live in ``http/dashboard.py``.
"""
