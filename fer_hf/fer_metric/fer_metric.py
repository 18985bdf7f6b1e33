"""FER metrics as an `evaluate` module that loads offline: `evaluate.load(fer_hf.evaluation.metrics.METRIC_PATH)`.

It is a thin wrapper: the numbers come from `fer_hf.evaluation.metrics.compute_fer_metrics`, the one metric function
that training, evaluation and comparison all call. `predictions` are logits (one row of K scores per image),
because top-2 accuracy needs the scores and not only the argmax.

    metric = evaluate.load(METRIC_PATH)
    metric.compute(predictions=logits, references=labels, label_names=["angry", ...])

`evaluate` reads this file's import lines to find its dependencies, so keep one import per line.
"""

import datasets
import evaluate
import numpy as np

from fer_hf.evaluation.metrics import compute_fer_metrics
from fer_hf.labels import FER_LABELS

_CITATION = """\
@misc{fer2013,
  title={Challenges in Representation Learning: A report on three machine learning contests},
  author={Goodfellow, Ian J. and others},
  year={2013},
  eprint={1307.0414},
}
"""

_DESCRIPTION = """\
Facial-expression recognition metrics: accuracy, macro- and weighted-F1, top-2 accuracy, per-class
precision/recall/F1/support and the confusion matrix, computed from logits (N, K) and integer labels (N,).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: logits or probabilities, one list of K floats per image.
    references: integer class ids in 0..K-1.
    label_names: the K class names in id order (default: the seven FER2013 classes).
Returns:
    a dict with accuracy, macro_f1, weighted_f1, top2_accuracy, per_class, confusion_matrix, num_samples.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class FerMetric(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float32")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, label_names=None) -> dict:
        names = list(label_names) if label_names is not None else list(FER_LABELS)
        return compute_fer_metrics(np.asarray(predictions), np.asarray(references), names)
