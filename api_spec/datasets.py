"""Dataset manifests: the files of a finished job, each with a presigned download URL."""

from marshmallow import Schema, fields


class DatasetFileSchema(Schema):
    name = fields.String(required=True)
    format = fields.String(required=True)
    records = fields.Integer(allow_none=True, required=True)
    bytes = fields.Integer(required=True)
    sha256 = fields.String(required=True)
    content_type = fields.String(required=True)
    url = fields.String(
        required=True, metadata={"description": "Presigned GET URL; expires (see expires_in)."}
    )


class Table1RowSchema(Schema):
    statistic = fields.String(required=True)
    this_dataset = fields.Raw(allow_none=True, required=True, metadata={"type": "number"})
    paper = fields.Raw(required=True, metadata={"type": "number"})


class ReportSchema(Schema):
    """A dataset's quality report (report.json): the paper's Table 1 beside the paper's numbers, the
    data of its Figures 3 and 4 (drawn as PNGs in the dataset), and the filter counts per rule."""

    table1 = fields.List(fields.Nested(Table1RowSchema), required=True)
    instances_per_instruction = fields.Dict(required=True, metadata={"description": "{this_dataset, paper}"})
    distinct_labels_per_classification_instruction = fields.Float(allow_none=True, required=True)
    rouge_l_to_nearest_seed = fields.Dict(
        required=True,
        metadata={"description": "Figure 3: {bin_width, counts, mean, scores} (one score per instruction)."},
    )
    lengths = fields.Dict(
        required=True,
        metadata={"description": "Figure 4: words -> count for instructions, non-empty inputs, outputs."},
    )
    filters = fields.Dict(required=True, metadata={"description": "stage -> rule -> candidates."})
    classification_selection = fields.Dict(
        allow_none=True,
        metadata={
            "description": "classification_method auto's choice: {chosen, tasks, classification_tasks, "
            "methods: method -> {balanced_accuracy, tp, fn, tn, fp}, unavailable: method -> why} on the "
            "seed tasks outside the demonstrations, or {skipped: why}; null for another method."
        },
    )
    judge_scores = fields.Dict(
        allow_none=True,
        metadata={
            "description": "The LLM judge's (judge_threshold): {counts: score 1-5 -> instances, unscored "
            "(no score could be read), mean, rubric} over every instance the filters kept, the ones it "
            "dropped included; null without a judge."
        },
    )
    figures = fields.Dict(required=True, metadata={"description": "The PNG files in the dataset."})


class ManifestSchema(Schema):
    job_id = fields.String(required=True)
    created_at = fields.String(required=True)
    partial = fields.Boolean(required=True, metadata={"description": "True for what a canceled job made."})
    expires_in = fields.Integer(required=True, metadata={"description": "Seconds the URLs stay valid."})
    extends = fields.String(
        metadata={
            "description": "An extension's: the job whose dataset this one continues (still downloadable)."
        }
    )
    files = fields.List(fields.Nested(DatasetFileSchema), required=True)
