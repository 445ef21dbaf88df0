"""The SELF-INSTRUCT method (Wang et al., 2022), independent of how it is deployed: no Redis, RQ, S3 or
HTTP here, so it runs the same in a worker, a preview and the command line.

Its words: recipe.py (what a run makes: Recipe, checked once by Recipe.build, and Execution),
vocabulary.py (closed vocabularies), fields.py (strict field types), seed_tasks.py (seed sets and
instruction files, validated line by line), endpoint.py (where completions come from and what they
cost), decisions.py (a record per candidate: kept or dropped, and why) and similarity.py (the exact
ROUGE-L index).

A run: run.py (its live state, committed through checkpoint.py), accounting.py (what it spends against
its budgets), lineage.py (what an extension carries over). engine.py drives a run through the three
stages in stages/ (bootstrap, classification, instances, and the paper's filters), which show the model
the texts in prompts/ and reach the endpoint through transport/ (online or through a Batch API, one
interface); outputs/ writes the dataset, its card and its report.
"""
