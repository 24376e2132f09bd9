"""Models as tools: capability catalog, intent detection, routing policy, pipelines, traces, and the
router served as a model ("auto"). See docs/router.md; the server-facing API is in ``serving.py``."""
