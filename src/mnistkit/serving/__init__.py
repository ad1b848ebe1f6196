"""The web server behind ``mnistkit serve`` (needs the ``serve`` extra).

- :mod:`.app`: the ASGI app (:func:`~mnistkit.serving.app.create_app`): page, ``/predict``, ``/model``;
- :mod:`.server`: binding the port and running uvicorn with deadlines for slow clients;
- :mod:`.numbers`: ``POST /predict?number=1``, written numbers read by the line reader;
- :mod:`.limits`: every limit on what one request may cost (imports nothing heavy).

Importing this package imports nothing heavy; FastAPI loads with :mod:`mnistkit.serving.app`.
"""
