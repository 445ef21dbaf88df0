"""The method's three stages (bootstrap.py, classification.py, instances.py) and the paper's filters they
apply (filters.py). Each stage module is a jobs.method.engine.Stage; it reads its settings from the run's
recipe only and sends its requests through jobs.method.transport's interface."""
