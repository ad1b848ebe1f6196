"""The web server behind ``mnistkit serve``: :func:`mnistkit.serving.app.create_app` (needs the ``serve`` extra).

Importing this package imports nothing heavy; FastAPI loads with :mod:`mnistkit.serving.app`.
"""
