"""``ferkit serve``: a REST API, a live WebSocket and the browser UI in one FastAPI app.

    app = create_app(model="default", detector="auto", api_key=None)
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints (JSON errors are ``{"error": "..."}`` with a 4xx status):

- ``POST /v1/predict`` an image upload -> the faces (results.jsonl schema), image size, model, detector
- ``POST /v1/videos`` a video upload -> a job, processed in the background; ``GET /v1/videos/{id}``
  its progress and, when done, per-frame results and download links (``/video``, ``/csv``,
  ``/jsonl``, ``/timeline``, ``/source``); ``DELETE`` removes it and its files
- ``GET /v1/models`` the models and face detectors a request may choose from
- ``WS /v1/live`` JPEG frames in, faces (tracked and smoothed per connection) out; the API key, when set,
  comes in a header, a subprotocol or a first message, so that browsers need not put it in the URL
- ``GET /health``, ``GET /docs`` and ``GET /redoc`` (served from local files), ``GET /openapi.json``, the UI at ``/``

All requests share each model through a :class:`~ferkit.app.serve.batcher.MicroBatcher`:
their face crops are classified together in one forward pass. Video jobs go
through the same batcher, from one background worker thread, so a long video
never blocks the API.

Safety: request bodies are capped before they are read (413); an image's pixel
count is read from its header and checked before it is decoded (413), so a
decompression bomb is never decoded; content is checked by decoding, never by
the file name (422); uploads are written only into a server-owned temporary
folder under generated names and deleted with their job; an optional API key
(``X-API-Key`` header) guards everything under ``/v1``, and its value is
blanked out of uvicorn's log lines wherever a client put it in a URL. At most
``max_decodes`` images (photos and live frames) are decoded and processed at
once; further requests wait their turn without holding a thread, and past
``max_queue`` waiting ones they are refused with 503, so a burst of large
photos cannot take the server's memory.

The package, one module per job:

- :mod:`~ferkit.app.serve.app`: :func:`create_app`, which only builds the shared state and includes the routers
- :mod:`~ferkit.app.serve.routes`: one router per area: ``predict``, ``videos``, ``live``, ``info`` (models,
  health), ``pages`` (UI, docs)
- :mod:`~ferkit.app.serve.hub`: the models and detectors; :mod:`~ferkit.app.serve.batcher`: the micro-batcher
- :mod:`~ferkit.app.serve.jobs`: video jobs; :mod:`~ferkit.app.serve.limits`: body, pixel and decode limits
- :mod:`~ferkit.app.serve.auth`: the API key; :mod:`~ferkit.app.serve.errors`: JSON errors;
  :mod:`~ferkit.app.serve.schemas`: response models; :mod:`~ferkit.app.serve.state`: shared state as dependencies
"""

from ferkit.app.serve.app import create_app

__all__ = ["create_app"]
