#!/usr/bin/env python3
"""Evaluate every expression of the wsgate Grafana dashboard and alert rules against a running
Prometheus, and render the dashboard's panels from the same data into a PNG.

usage: check_dashboard.py PROM_URL DASHBOARD_JSON ALERTS_YML [--render OUT.png --since SECONDS --peak UNIX_TIME]
(stat panels are drawn with their value at --peak, a moment during the traffic)

Dashboard variables are substituted as Grafana would with "All" selected: $route -> .*,
$__rate_interval -> 1m. Exits 1 if any expression is invalid or returns no series. For alert
rules the full expression must be valid and its left-hand side (the measured quantity, before
the threshold comparison) must return series.
"""
import json, re, sys, time, urllib.parse, urllib.request

def subst(expr):
    return expr.replace("$__rate_interval", "1m").replace("$route", ".*").replace("${route}", ".*")

def query(prom, expr, at=None):
    params = {"query": expr}
    if at:
        params["time"] = str(at)
    url = f"{prom}/api/v1/query?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
    except urllib.error.HTTPError as e:
        body = json.load(e)
    return body

def query_range(prom, expr, start, end, step):
    params = {"query": expr, "start": str(start), "end": str(end), "step": str(step)}
    with urllib.request.urlopen(f"{prom}/api/v1/query_range?{urllib.parse.urlencode(params)}", timeout=20) as r:
        return json.load(r)["data"]["result"]

def lhs(expr):
    """The measured side of an alert expression: everything before its last top-level comparison."""
    depth, cut = 0, None
    for i, ch in enumerate(expr):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and (expr[i:i + 3] in (" > ", " < ") or expr[i:i + 4] in (" == ", " >= ", " <= ", " != ")):
            cut = i
    return expr[:cut].strip() if cut else expr

def alert_rules(path):
    """(name, expr) of each rule; a small reader for the flat layout of alerts.yml."""
    rules, name = [], None
    for line in open(path):
        m = re.match(r"\s*- alert:\s*(\S+)", line)
        if m:
            name = m.group(1)
        m = re.match(r"\s*expr:\s*(.+)$", line)
        if m and name:
            rules.append((name, m.group(1).strip()))
            name = None
    return rules

def main():
    prom, dash_path, alerts_path = sys.argv[1:4]
    render = sys.argv[sys.argv.index("--render") + 1] if "--render" in sys.argv else None
    since = float(sys.argv[sys.argv.index("--since") + 1]) if "--since" in sys.argv else 300
    peak = float(sys.argv[sys.argv.index("--peak") + 1]) if "--peak" in sys.argv else None
    dash = json.load(open(dash_path))
    panels = [p for p in dash["panels"] if p.get("type") != "row"]
    failures, checked = [], 0
    for p in panels:
        for t in p.get("targets", []):
            expr = subst(t["expr"])
            body = query(prom, expr)
            checked += 1
            if body.get("status") != "success":
                failures.append(f"panel '{p['title']}': invalid: {body.get('error')} :: {expr}")
            elif not body["data"]["result"]:
                failures.append(f"panel '{p['title']}': no series :: {expr}")
    var_q = dash["templating"]["list"][1]["definition"]
    m = re.match(r"label_values\((\w+), (\w+)\)", var_q)
    body = query(prom, f"count by ({m.group(2)}) ({m.group(1)})")
    checked += 1
    if not body["data"]["result"]:
        failures.append(f"variable route: no values :: {var_q}")
    for name, expr in alert_rules(alerts_path):
        full, measured = query(prom, expr), query(prom, lhs(expr))
        checked += 2
        if full.get("status") != "success":
            failures.append(f"alert {name}: invalid: {full.get('error')}")
        if measured.get("status") != "success" or not measured["data"]["result"]:
            failures.append(f"alert {name}: measured side returns no series :: {lhs(expr)}")
    print(f"dashboard-check: {checked} expressions evaluated, {len(failures)} failing")
    for f in failures:
        print("  FAIL", f)
    if render:
        draw(prom, dash, panels, render, since, peak)
    sys.exit(1 if failures else 0)

UNIT_LABEL = {"short": "", "reqps": "per second", "s": "seconds", "Bps": "bytes per second",
              "percentunit": "share", "ops": "per second", "bytes": "bytes"}

def fmt(v, unit):
    """A stat value the way Grafana would show it, roughly."""
    if unit == "percentunit":
        return f"{v * 100:.1f}%"
    if unit == "s":
        if v < 0.001:
            return f"{v * 1e6:.0f} µs"
        return f"{v * 1000:.2f} ms" if v < 1 else f"{v:.2f} s"
    def short(x):
        for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= div:
                return f"{x / div:.3g}{suffix}"
        return f"{x:.3g}"
    if unit in ("reqps", "ops"):
        return f"{short(v)}/s"
    return short(v)

def threshold_color(p, v):
    steps = p.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps")
    if not steps:
        return "#73bf69"
    color = steps[0]["color"]
    for st in steps[1:]:
        if st["value"] is not None and v >= st["value"]:
            color = st["color"]
    return {"green": "#37872d", "yellow": "#c4a000", "red": "#c4162a", "blue": "#1f60c4"}.get(color, color)

def draw(prom, dash, panels, out, since, peak):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    end = time.time()
    start = end - since
    step = max(1, int(since / 120))
    rows = [p for p in dash["panels"] if p.get("type") == "row"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in dash["panels"])
    total_in = height * 0.42 + 0.8
    fig = plt.figure(figsize=(24, total_in), facecolor="#111217")
    top = 1.0 - 0.8 / total_in          # below the caption
    unit_h = top / height
    fig.text(0.005, 0.997, "wsgate dashboard: a render of its own Prometheus queries over a dashboard-check.sh run "
             "(mixed good and hostile traffic), drawn with matplotlib; not a Grafana screenshot. Zero-only series are left out.",
             color="#8e8e8e", fontsize=10, va="top")
    for r in rows:
        fig.text(0.005, top - (r["gridPos"]["y"] + 0.8) * unit_h, r["title"], color="#ccccdc", fontsize=13, weight="bold")
    for p in panels:
        g = p["gridPos"]
        ax = fig.add_axes([g["x"] / 24 + 0.004, top - (g["y"] + g["h"]) * unit_h + 0.012,
                           g["w"] / 24 - 0.012, g["h"] * unit_h - 0.03], facecolor="#181b1f")
        ax.set_title(p["title"], color="#ccccdc", fontsize=9, loc="left")
        ax.tick_params(colors="#8e8e8e", labelsize=7)
        for s in ax.spines.values():
            s.set_color("#2c3235")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        if p["type"] == "stat":
            body = query(prom, subst(p["targets"][0]["expr"]), at=peak)
            res = body.get("data", {}).get("result", [])
            label = p["targets"][0].get("legendFormat", "")
            color = "#73bf69"
            if res and "{{" in label:
                text = " ".join(re.sub(r"\{\{(\w+)\}\}", lambda m: r["metric"].get(m.group(1), ""), label) for r in res)
            elif res:
                v = float(res[0]["value"][1])
                text = fmt(v, unit) if v == v else "–"
                color = threshold_color(p, v) if v == v else color
            else:
                text = "–"
            if p.get("options", {}).get("colorMode") == "background":
                ax.set_facecolor(color)
                color = "#ffffff"
            ax.text(0.5, 0.4, text, color=color, fontsize=22, ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([]); ax.set_yticks([])
            continue
        if p["type"] == "bargauge":
            body = query(prom, subst(p["targets"][0]["expr"]), at=peak)
            res = [r for r in body.get("data", {}).get("result", []) if float(r["value"][1]) > 0]
            res.sort(key=lambda r: -float(r["value"][1]))
            names = [r["metric"].get("result", "") for r in res]
            vals = [float(r["value"][1]) for r in res]
            ax.bar(range(len(vals)), vals, color=[threshold_color(p, v) for v in vals])
            ax.set_xticks(range(len(vals)), names, rotation=0, fontsize=7, color="#ccccdc")
            for i, v in enumerate(vals):
                ax.text(i, v, fmt(v, unit), ha="center", va="bottom", color="#ccccdc", fontsize=7)
            ax.set_ylabel(UNIT_LABEL.get(unit, unit), color="#8e8e8e", fontsize=7)
            continue
        for t in p["targets"]:
            for series in query_range(prom, subst(t["expr"]), start, end, step):
                xs = [float(v[0]) - end for v in series["values"]]
                ys = [float(v[1]) for v in series["values"]]
                if not any(y != 0 for y in ys if y == y):
                    continue  # a zero-only series adds a legend entry and no information
                label = re.sub(r"\{\{(\w+)\}\}", lambda m: series["metric"].get(m.group(1), ""), t.get("legendFormat", ""))
                ax.plot(xs, ys, linewidth=1.2, label=label or None)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left", facecolor="#181b1f", labelcolor="#ccccdc", framealpha=0.7, ncol=2)
        else:
            ax.text(0.5, 0.5, "no non-zero series in this run", color="#8e8e8e", fontsize=9, ha="center",
                    va="center", transform=ax.transAxes)
        ax.set_xlabel("seconds before the end of the run", color="#8e8e8e", fontsize=7)
        ax.set_ylabel(UNIT_LABEL.get(unit, unit), color="#8e8e8e", fontsize=7)
        if unit == "s":
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v * 1000:g} ms"))
            ax.set_ylabel("")
    fig.savefig(out, dpi=70, facecolor=fig.get_facecolor())
    print(f"dashboard-check: rendered {len(panels)} panels to {out}")

if __name__ == "__main__":
    main()
