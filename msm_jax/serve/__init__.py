"""`msm serve`: an OpenAI-compatible HTTP server over an msm-jax checkpoint (needs the `serve`
extra: fastapi, uvicorn). `app.py`: the HTTP API; `engine.py`: the batching loop."""
