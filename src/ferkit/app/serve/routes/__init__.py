"""One router per area of the API: predict (photos), videos (jobs), live (WebSocket), info (models, health), pages (UI, docs)."""
