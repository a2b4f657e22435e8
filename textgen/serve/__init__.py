"""textgen serve: the models of one or more checkpoints behind OpenAI's completions API (app.py,
schema.py, page/), stepped together by one engine (engine.py, cache.py, metrics.py)."""
