"""Does a FER+-trained model, read on FER2013's 7 classes, help the FER2013 ensemble on PublicTest?

    python docs/scripts/ferplus_member.py runs/ferplus_cnn --data ../shared/fer2013

Averages the bundled `ensemble`'s probabilities (its three members, uniform) with the FER+ model's probabilities on
the 7 classes both have (contempt's output dropped, the rest renormalised by the softmax), as a fourth member of
weight 1/4, and prints single-view accuracy and macro-F1 of the ensemble alone and with the member.
"""

import argparse

import numpy as np

from fer_hf.data.dataset import load_split
from fer_hf.data.decode import FerTensorDataset
from fer_hf.evaluation.evaluator import align_labels, run_inference
from fer_hf.evaluation.metrics import compute_fer_metrics, softmax
from fer_hf.models.loading import load_classifier

parser = argparse.ArgumentParser()
parser.add_argument("member")
parser.add_argument("--data", required=True)
parser.add_argument("--ensemble", default="ensemble")
args = parser.parse_args()
_, ds = load_split(args.data, "validation")
faces = FerTensorDataset.from_split(ds)
names = ds.features["label"].names
ensemble = load_classifier(args.ensemble)
member = load_classifier(args.member)
columns = list(align_labels(member.label_names, names, args.member).columns)
p_ensemble = softmax(run_inference(ensemble, faces)[0])
p_member = softmax(run_inference(member, faces)[0][:, columns])
labels = faces.labels.numpy()
for title, probs in (
    ("ensemble", p_ensemble),
    ("ensemble + FER+ member (1/4)", 0.75 * p_ensemble + 0.25 * p_member),
    ("FER+ member alone (7 of its outputs)", p_member),
):
    m = compute_fer_metrics(np.log(probs), labels, names)
    print(f"{title}: accuracy {m['accuracy']:.4f}  macro-F1 {m['macro_f1']:.4f}  ({m['num_samples']} faces)")
