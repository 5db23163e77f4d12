#!/usr/bin/env python3
"""Checks deploy/grafana/herald.json and deploy/prometheus/rules.yaml against a real scrape.

Starts the herald binary (target/debug/herald, or $HERALD_BIN) on a free loopback port
with a minimal config, scrapes /metrics, then checks that:

- the dashboard JSON parses and every metric named in a panel query or a template
  variable query is a series herald exports (histograms only through their
  `_bucket`/`_sum`/`_count` series), and every label matcher names a label the metric
  has and, for `=`, `!=` and regex matchers without Grafana variables, a value (or
  pattern) that matches one of the pre-initialised values;
- the same for every `expr` of rules.yaml (PyYAML when installed, else a small
  line-based reader), where `up` (recorded by Prometheus for every target) is also
  allowed, and every alert has summary, description and runbook_url annotations.

Target labels added by Prometheus (job, instance, namespace, pod, ...) are not checked.
Runs `promtool check rules` too when promtool is on PATH; otherwise says it skipped it.

Usage: tests/deploy/check_dashboard.py [--bin PATH] [--dashboard FILE] [--rules FILE]
Standard library only. Exit status 0 when everything is known, 1 otherwise.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

# Labels Prometheus attaches to every series of a target (ServiceMonitor or static config).
TARGET_LABELS = {
    "job", "instance", "namespace", "pod", "service", "endpoint", "container", "node",
    "__name__",
}
# Series Prometheus records itself; allowed in the rules only.
SYNTHETIC_IN_RULES = {"up"}

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan", "atan2", "start", "end",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

CONFIG = """\
[http_server]
address = "127.0.0.1"
port = 0
internal_port = 0

[client.token]
hmac_secret_key = "check-dashboard-secret-0123456789abcdef"

[prometheus]
enabled = true

[log]
level = "warn"

[shutdown]
timeout = "1s"
"""


# --------------------------------------------------------------------------- server

class Server:
    def __init__(self, binary):
        self.dir = tempfile.mkdtemp(prefix="herald-check-dashboard-")
        config = os.path.join(self.dir, "herald.toml")
        with open(config, "w") as f:
            f.write(CONFIG)
        self.stderr = open(os.path.join(self.dir, "stderr.log"), "w+")
        env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", config],
            stdout=subprocess.PIPE, stderr=self.stderr, stdin=subprocess.DEVNULL,
            env=env, text=True,
        )
        self.api = self._wait_listening(timeout=30)

    def _wait_listening(self, timeout):
        found = {}

        def read():
            for line in self.proc.stdout:
                m = re.search(r"herald listening ws=\S+ api=(\S+)", line)
                if m:
                    found["api"] = m.group(1).rstrip("/")
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if "api" not in found:
            self.stop()
            self.stderr.seek(0)
            raise RuntimeError(
                "herald did not print its `herald listening` line within %ss; stderr:\n%s"
                % (timeout, self.stderr.read()[-4000:]))
        return found["api"]

    def scrape(self):
        last = None
        for _ in range(50):
            try:
                with urllib.request.urlopen(self.api + "/metrics", timeout=5) as r:
                    return r.read().decode("utf-8")
            except OSError as e:  # not accepting yet
                last = e
                time.sleep(0.1)
        raise RuntimeError("GET %s/metrics failed: %s" % (self.api, last))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def parse_exposition(text):
    """Returns ({sample name: {label: {values}}}, {family: type})."""
    samples, families = {}, {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                families[parts[2]] = parts[3]
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s", line)
        if not m:
            continue
        labels = samples.setdefault(m.group(1), {})
        for name, value in re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                      m.group(3) or ""):
            labels.setdefault(name, set()).add(value)
    return samples, families


# --------------------------------------------------------------------------- PromQL

def tokens(expr):
    """Yields (kind, text): ident, selector ({...} body), paren, other."""
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c.isspace():
            i += 1
        elif c == "#":  # comment to end of line
            while i < n and expr[i] != "\n":
                i += 1
        elif c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" else 1
            yield "string", expr[i + 1:j]
            i = j + 1
        elif c == "{":
            j, quote = i + 1, None
            while j < n and (quote or expr[j] != "}"):
                if quote:
                    if expr[j] == "\\":
                        j += 1
                    elif expr[j] == quote:
                        quote = None
                elif expr[j] in "\"'`":
                    quote = expr[j]
                j += 1
            yield "selector", expr[i + 1:j]
            i = j + 1
        elif c == "[":  # range or subquery: durations and Grafana variables
            j = expr.find("]", i)
            i = n if j < 0 else j + 1
        elif c == "$":  # Grafana variable: $x, ${x}, $__rate_interval
            j = i + 1
            if j < n and expr[j] == "{":
                j = expr.find("}", j) + 1 or n
            else:
                while j < n and (expr[j].isalnum() or expr[j] == "_"):
                    j += 1
            i = j
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            j = i + 1  # number or duration (1e3, 0x1f, 5m, 1h30m)
            while j < n and (expr[j].isalnum() or expr[j] in "._"):
                j += 1
            i = j
        elif c.isalpha() or c in "_:":
            j = i + 1
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            yield "ident", expr[i:j]
            i = j
        elif c in "()":
            yield "paren", c
            i += 1
        else:
            yield "other", c
            i += 1


MATCHER = re.compile(
    r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)\s*,?')


def parse_matchers(body):
    out, pos = [], 0
    body = body.strip()
    while pos < len(body):
        m = MATCHER.match(body, pos)
        if not m:
            raise ValueError("cannot parse label matchers {%s}" % body)
        value = m.group(3)[1:-1]
        if m.group(3)[0] != "`":
            value = bytes(value, "utf-8").decode("unicode_escape")
        out.append((m.group(1), m.group(2), value))
        pos = m.end()
    return out


def selectors(expr):
    """Every vector selector of expr: [(metric or None, [(label, op, value)])]."""
    toks = list(tokens(expr))
    out, i = [], 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1] if i + 1 < len(toks) else (None, None)
        if kind == "ident":
            word = text.lower()
            if word in LABEL_LIST_KEYWORDS:
                if nxt == ("paren", "("):  # skip the label list
                    depth, i = 0, i + 1
                    while i < len(toks):
                        if toks[i] == ("paren", "("):
                            depth += 1
                        elif toks[i] == ("paren", ")"):
                            depth -= 1
                            if depth == 0:
                                break
                        i += 1
            elif word in KEYWORDS or word in AGGREGATIONS or nxt == ("paren", "("):
                pass  # keyword, aggregation or function call
            elif nxt[0] == "selector":
                out.append((text, parse_matchers(nxt[1])))
                i += 1
            else:
                out.append((text, []))
        elif kind == "selector":
            out.append((None, parse_matchers(text)))
        i += 1
    return out


def check_expr(where, expr, samples, allowed_synthetic, problems, used):
    try:
        found = selectors(expr)
    except ValueError as e:
        problems.append("%s: %s" % (where, e))
        return
    if not found:
        problems.append("%s: no metric in expression %r" % (where, expr))
    for metric, matchers in found:
        if metric is None:
            names = [v for (l, op, v) in matchers if l == "__name__" and op == "="]
            if not names:
                problems.append("%s: selector without a metric name in %r" % (where, expr))
                continue
            metric = names[0]
        if metric in allowed_synthetic:
            used.add(metric)
            continue
        if metric not in samples:
            problems.append("%s: unknown metric %s" % (where, metric))
            continue
        used.add(metric)
        labels = samples[metric]
        for label, op, value in matchers:
            if label in TARGET_LABELS:
                continue
            if label not in labels:
                problems.append("%s: %s has no label %r (it has: %s)" % (
                    where, metric, label, ", ".join(sorted(labels)) or "none"))
                continue
            if "$" in value:
                continue  # Grafana variable
            values = labels[label]
            if op in ("=", "!="):
                ok = value in values
            else:
                try:
                    pattern = re.compile("(?:%s)" % value)
                except re.error as e:
                    problems.append("%s: bad regex %r: %s" % (where, value, e))
                    continue
                ok = any(pattern.fullmatch(v) for v in values)
            if not ok:
                problems.append("%s: %s{%s%s%r} matches none of the exported values (%s)" % (
                    where, metric, label, op, value, ", ".join(sorted(values))))


# --------------------------------------------------------------------------- dashboard

def dashboard_queries(dash):
    """[(where, expr)] for every panel target and query variable."""
    out = []

    def walk_panels(panels, trail):
        for p in panels or []:
            title = "%s/%s" % (trail, p.get("title") or p.get("id"))
            for t in p.get("targets") or []:
                if isinstance(t.get("expr"), str) and t["expr"].strip():
                    out.append(("panel %r ref %s" % (title, t.get("refId")), t["expr"]))
            walk_panels(p.get("panels"), title)

    walk_panels(dash.get("panels"), "")
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if not isinstance(q, str):
            continue
        m = re.match(r"\s*label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\s*\)\s*$", q, re.S) \
            or re.match(r"\s*query_result\((.*)\)\s*$", q, re.S)
        if m:
            out.append(("variable %r" % v.get("name"), m.group(1)))
        elif not re.match(r"\s*(label_values\(\s*[a-zA-Z_]\w*\s*\)|label_names\(\))", q):
            out.append(("variable %r" % v.get("name"), q))
    return out


def check_dashboard(path, samples, problems, used):
    try:
        with open(path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        problems.append("%s: does not parse: %s" % (path, e))
        return 0
    ids = []

    def collect(panels):
        for p in panels or []:
            ids.append(p.get("id"))
            collect(p.get("panels"))

    collect(dash.get("panels"))
    if not ids:
        problems.append("%s: no panels" % path)
    dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
    if dupes:
        problems.append("%s: duplicate panel ids %s" % (path, dupes))
    queries = dashboard_queries(dash)
    for where, expr in queries:
        check_expr("%s: %s" % (os.path.basename(path), where), expr, samples, set(),
                   problems, used)
    return len(queries)


# --------------------------------------------------------------------------- rules

def read_rules_fallback(text):
    """A minimal reader for the rules file: [{alert/record, expr, annotations}]."""
    rules, current, lines, i = [], None, text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^(\s*)(?:- )?(alert|record):\s*(.+?)\s*$", line)
        if m:
            current = {m.group(2): m.group(3).strip("\"'"), "annotations": {}}
            rules.append(current)
        m = re.match(r"^(\s*)(?:- )?expr:\s*(.*?)\s*$", line)
        if m and current is not None:
            value = m.group(2)
            if value in ("|", "|-", "|+", ">", ">-", ">+"):
                indent, block = None, []
                i += 1
                while i < len(lines):
                    l2 = lines[i]
                    if l2.strip() == "":
                        block.append("")
                        i += 1
                        continue
                    ind = len(l2) - len(l2.lstrip())
                    if indent is None:
                        indent = ind
                    if ind < indent or ind <= len(m.group(1)):
                        break
                    block.append(l2[indent:])
                    i += 1
                current["expr"] = "\n".join(block)
                continue
            current["expr"] = value.strip("\"'")
        m = re.match(r"^\s+(summary|description|runbook_url):", line)
        if m and current is not None:
            current["annotations"][m.group(1)] = True
        i += 1
    return rules


def read_rules(path):
    with open(path) as f:
        text = f.read()
    try:
        import yaml  # optional
    except ImportError:
        print("note: PyYAML not installed; reading %s with the line-based reader" % path)
        return read_rules_fallback(text)
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list):
        raise ValueError("no top-level `groups:` list")
    rules = []
    for group in doc["groups"]:
        for rule in group.get("rules") or []:
            rules.append(rule)
    return rules


def check_rules(path, samples, problems, used):
    try:
        rules = read_rules(path)
    except (OSError, ValueError) as e:
        problems.append("%s: does not parse: %s" % (path, e))
        return 0
    if not rules:
        problems.append("%s: no rules" % path)
    names = os.path.basename(path)
    for rule in rules:
        name = rule.get("alert") or rule.get("record") or "?"
        expr = rule.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            problems.append("%s: rule %s has no expr" % (names, name))
            continue
        check_expr("%s: %s" % (names, name), str(expr), samples, SYNTHETIC_IN_RULES,
                   problems, used)
        if "alert" in rule:
            missing = [k for k in ("summary", "description", "runbook_url")
                       if not (rule.get("annotations") or {}).get(k)]
            if missing:
                problems.append("%s: alert %s lacks annotations %s" % (names, name, missing))
    return len(rules)


def promtool(path, problems):
    tool = shutil.which("promtool")
    if not tool:
        print("note: promtool not on PATH; skipped `promtool check rules` "
              "(the metric check above is the test)")
        return
    r = subprocess.run([tool, "check", "rules", path], capture_output=True, text=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        problems.append("promtool check rules %s failed:\n%s" % (path, r.stderr.strip()))


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.environ.get("HERALD_BIN")
                    or os.path.join(ROOT, "target", "debug", "herald"))
    ap.add_argument("--dashboard", default=os.path.join(ROOT, "deploy", "grafana", "herald.json"))
    ap.add_argument("--rules", default=os.path.join(ROOT, "deploy", "prometheus", "rules.yaml"))
    args = ap.parse_args()

    if not os.access(args.bin, os.X_OK):
        print("FAIL: herald binary %s not found: build it (cargo build -p herald) "
              "or set HERALD_BIN" % args.bin)
        return 1
    server = Server(args.bin)
    try:
        text = server.scrape()
    finally:
        server.stop()
    samples, families = parse_exposition(text)
    print("scraped %s/metrics: %d families, %d series names"
          % (server.api, len(families), len(samples)))

    problems, used_dash, used_rules = [], set(), set()
    n = check_dashboard(args.dashboard, samples, problems, used_dash)
    print("%s: %d queries, %d distinct series names"
          % (os.path.relpath(args.dashboard, ROOT), n, len(used_dash)))
    n = check_rules(args.rules, samples, problems, used_rules)
    print("%s: %d rules, %d distinct series names"
          % (os.path.relpath(args.rules, ROOT), n, len(used_rules)))
    promtool(args.rules, problems)

    def family(sample):
        for suffix in ("_bucket", "_sum", "_count"):
            if sample.endswith(suffix) and sample[:-len(suffix)] in families:
                return sample[:-len(suffix)]
        return sample

    shown = {family(s) for s in used_dash}
    unshown = sorted(f for f in families if f.startswith("herald_") and f not in shown)
    if unshown:
        print("info: herald families not on the dashboard: %s" % ", ".join(unshown))

    if problems:
        print("\nFAIL: %d problem(s):" % len(problems))
        for p in problems:
            print("  - " + p)
        return 1
    print("OK: every metric in the dashboard and the rules is exported by herald")
    return 0


if __name__ == "__main__":
    sys.exit(main())
