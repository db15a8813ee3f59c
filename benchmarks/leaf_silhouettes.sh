#!/usr/bin/env bash
# The whole pipeline on the real leaf-silhouettes data (99 species, 7 labelled images each), run
# with a preset, ending in submissions/submission.csv and a one-line summary of the run.
#
#   benchmarks/leaf_silhouettes.sh                  # presets/leaf-silhouettes.yaml (data.root only)
#   benchmarks/leaf_silhouettes.sh d2l-course       # the d2l course's recipe (a name or a path)
#
# The run is a DVC experiment, `leaf preset <preset> -S data.root=<the dataset>` (dvc exp run
# in the workspace, named <preset>-<date>): afterwards params.yaml holds the preset's values and
# agrees with dvc.lock and the outputs; `git restore params.yaml` returns to the committed settings;
# `dvc exp show` lists the runs.
set -euo pipefail
cd "$(dirname "$0")/.."

preset="${1:-leaf-silhouettes}"
data="../shared/datasets/leaf-silhouettes"
if [[ ! -f "$data/train.csv" ]]; then
    echo "error: $data/train.csv not found: the dataset must sit beside this checkout" >&2
    exit 2
fi
if ! git diff --quiet -- params.yaml; then
    # leaf preset lays the preset over params.yaml as it is: a previous run's values would leak in
    echo "error: params.yaml differs from the committed one (a previous preset run?);" \
        "git restore params.yaml first" >&2
    exit 2
fi
name="$(basename "$preset" .yaml)-$(date +%Y%m%d-%H%M%S)"
run_preset=(python3 -m pipeline.tools.presets "$preset" -S "data.root=$data" --name "$name")

start=$(date +%s)
"${run_preset[@]}"
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
echo "experiment $name; params.yaml now holds its values (git restore params.yaml: the committed ones)"
