"""The SELF-INSTRUCT method (Wang et al., 2022), independent of how it is deployed.

One run: the recipe (recipe.py) and seed tasks (seed_tasks.py) go into a Run (run.py), which the
engine (engine.py) drives through three stages: bootstrap.py (new instructions, filtered by
filters.py and the ROUGE-L index in similarity.py), classification.py and instances.py. Prompts
are built in prompts.py and parsed in parsing.py; llm.py talks to any OpenAI-compatible endpoint
(local_model.py starts the embedded one) with window.py keeping requests in flight; every
candidate gets a Decision (decisions.py); checkpoint.py commits progress; exports.py writes the
dataset. Nothing here imports Redis, RQ, boto3 or Flask: jobs/ runs this as a service.
"""
