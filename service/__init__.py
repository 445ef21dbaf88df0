"""The HTTP adapter: Flask app factory, one blueprint per resource. Never runs the LLM."""
