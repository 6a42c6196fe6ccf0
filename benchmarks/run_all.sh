#!/bin/bash
# Issue 19's rows side by side: the benchmarks one after another, each recording its
# section in benchmarks/RESULTS.md. Run on a quiet machine (the ratios are within one run).
#   bash benchmarks/run_all.sh
set -euo pipefail
cd "$(dirname "$0")/.."
set -x
python benchmarks/launch.py --runs 5 --requests 300
python benchmarks/tunnel_route.py
python benchmarks/relay_scale.py
python benchmarks/orchestrator.py --watch 1000
python benchmarks/resources.py --runs 10 --jobs 24
python benchmarks/reliability.py
python benchmarks/containment.py --tasks 60
