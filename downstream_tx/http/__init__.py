"""HTTP: the Klein server (``server.DownstreamServer``), its routes by protocol, and the site that
serves it. Nothing outside this package knows HTTP."""
