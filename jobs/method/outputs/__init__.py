"""What a run leaves behind: the dataset files with stats.json and run.json (exports.py), the dataset
card (card.py), the quality report (report.py) and its figures (figures.py). Functions of the checkpoint,
the seed set and the recipe, so two runs that made the same candidates write byte-identical files."""
