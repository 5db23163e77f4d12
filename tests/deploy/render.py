"""Lint (strict) and render helm/herald for the default values and every ci/*.yaml.

Usage: render.py CHART OUTDIR. Writes OUTDIR/<set>/<template>.yaml (non-empty
manifests only) and exits non-zero, naming the value set, on any lint error or
render failure.
"""
import pathlib
import sys

import yaml
from helm_python.chart import Chart, lint

chart_dir = pathlib.Path(sys.argv[1])
out_dir = pathlib.Path(sys.argv[2])

value_sets = {"default": {}}
for f in sorted((chart_dir / "ci").glob("*.yaml")):
    value_sets[f.stem] = yaml.safe_load(f.read_text()) or {}

failed = []
chart = Chart.load(str(chart_dir))
for name, values in value_sets.items():
    report = lint(str(chart_dir), values, strict=True, namespace="herald", kube_version="v1.30.0")
    problems = list(report.get("errors") or [])
    problems += [f'{m.get("path")}: {m.get("error")}' for m in report.get("messages") or [] if m.get("severity", 0) >= 2]
    if problems:
        failed.append(name)
        for p in problems:
            print(f"helm lint [{name}]: {p}", file=sys.stderr)
        continue
    try:
        manifests = chart.render(values, name="herald", namespace="herald")
    except Exception as e:  # schema violations and `fail` raise
        failed.append(name)
        print(f"helm template [{name}]: {e}", file=sys.stderr)
        continue
    target = out_dir / name
    target.mkdir(parents=True, exist_ok=True)
    count = 0
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml") or not text.strip():
            continue
        (target / pathlib.Path(path).name).write_text(text.lstrip("\n"))
        count += 1
    print(f"rendered {name}: {count} manifests")

if failed:
    print(f"chart lint/render failed for: {', '.join(failed)}", file=sys.stderr)
    sys.exit(1)
