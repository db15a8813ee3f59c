#!/usr/bin/env bash
# The whole pipeline on the real leaf-silhouettes data (99 species, 7 labelled images each), run
# with a preset, ending in submissions/submission.csv and a one-line summary of the run.
#
#   benchmarks/leaf_silhouettes.sh                             # the tuned preset
#   benchmarks/leaf_silhouettes.sh presets/d2l-course.yaml     # the d2l course's recipe
#
# The preset replaces params.yaml for the run (dvc.lock and every output then belong to it);
# params.yaml is put back afterwards, so the next `dvc repro` runs your own settings again.
set -euo pipefail
cd "$(dirname "$0")/.."

preset="${1:-presets/leaf-silhouettes.yaml}"
data="../shared/datasets/leaf-silhouettes"
if [[ ! -f "$preset" ]]; then
    echo "error: preset $preset not found (see presets/)" >&2
    exit 2
fi
if [[ ! -f "$data/train.csv" ]]; then
    echo "error: $data/train.csv not found: the dataset must sit beside this checkout" >&2
    exit 2
fi

saved="$(mktemp params.yaml.XXXXXX)"
cp params.yaml "$saved"
trap 'mv -f "$saved" params.yaml && echo "params.yaml restored (outputs and dvc.lock are from $preset)"' EXIT
cp "$preset" params.yaml

start=$(date +%s)
dvc repro
seconds=$(( $(date +%s) - start ))

python3 - "$preset" "$seconds" <<'PY'
import json, sys
preset, seconds = sys.argv[1], int(sys.argv[2])
metrics = json.load(open("results/ensemble/metrics.json"))
per_model = {name: round(m["oof_accuracy"], 4) for name, m in metrics["models"].items()}
summary = {
    "preset": preset,
    "wall_time_s": seconds,
    "oof_accuracy_per_model": per_model,
    "oof_accuracy_equal": metrics.get("oof_accuracy_equal"),
    "oof_accuracy_fitted": metrics.get("oof_accuracy_fitted"),
    "oof_accuracy_fitted_cross": metrics.get("oof_accuracy_fitted_cross"),
    "oof_accuracy": metrics["oof_accuracy"],
    "submission": "submissions/submission.csv",
}
print(f"{preset}: OOF accuracy {metrics['oof_accuracy']:.4f} in {seconds // 60} min {seconds % 60} s")
print(json.dumps(summary))
PY
