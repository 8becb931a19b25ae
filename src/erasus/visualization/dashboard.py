"""``erasus dashboard RUN_DIR...``: compare saved runs side by side in the browser.

A small Starlette app (served by uvicorn on localhost) with plotly drawing in the page, after
Unlearning Comparator (Lee et al., "Unlearning Comparator: A Visual Analytics System for
Comparative Evaluation of Machine Unlearning Methods", 2025): pick any two runs and see their
verdicts and metric intervals, per-class accuracy against the retrained model's, prediction
matrices, the twin embeddings of forget and retain samples, layer-wise similarity to the
retrained model, and the membership-attack score distributions. Everything the page needs is
served from this machine (plotly's own bundle): no network, no external script.

Runs are folders written by ``erasus unlearn --config ... --out RUN_DIR`` (or
:func:`erasus.visualization.runs.save_run`); a folder that holds run folders adds them all.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

from ..core.exceptions import ConfigError, DataError
from .runs import load_run


def find_runs(paths: Sequence) -> List[Path]:
    """Run folders among ``paths`` (each a run folder or a folder of run folders), in order."""
    out: List[Path] = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(c for c in p.iterdir() if (c / "run.json").is_file())
        else:
            raise DataError(f"{p}: no such folder.")
    if not out:
        raise DataError(f"No run folder (with run.json) among {[str(p) for p in paths]}. Write one with "
                        "`erasus unlearn --config CONFIG --out RUN_DIR`.")
    return out


def _label(run: dict, k: int) -> str:
    res = run.get("result") or {}
    ver = (run.get("verification") or {}).get("verdict", "")
    return f"{k}: {run.get('name', '')} ({res.get('strategy', '?')}{', ' + ver if ver else ''})"


def create_app(paths: Sequence):
    """The Starlette application serving the runs under ``paths``."""
    try:
        from starlette.applications import Starlette
        from starlette.responses import HTMLResponse, JSONResponse, Response
        from starlette.routing import Route
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ConfigError("The dashboard needs starlette, uvicorn and plotly: pip install 'erasus[viz]'.") from e
    try:
        from plotly.offline import get_plotlyjs
    except ImportError as e:  # pragma: no cover
        raise ConfigError("The dashboard needs plotly: pip install 'erasus[viz]'.") from e
    runs: Dict[int, dict] = {}
    for k, d in enumerate(find_runs(paths)):
        runs[k] = load_run(d)
    plotly_js = get_plotlyjs()

    async def index(request):
        return HTMLResponse(PAGE)

    async def plotly(request):
        return Response(plotly_js, media_type="application/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    async def listing(request):
        return JSONResponse([{"id": k, "label": _label(r, k), "has_views": r.get("views") is not None}
                             for k, r in runs.items()])

    async def one(request):
        k = int(request.path_params["k"])
        if k not in runs:
            return JSONResponse({"error": f"no run {k}"}, status_code=404)
        r = runs[k]
        return Response(json.dumps({key: r.get(key) for key in ("name", "config", "request", "result",
                                                                 "verification", "metrics", "views")}),
                        media_type="application/json")

    return Starlette(routes=[Route("/", index), Route("/plotly.min.js", plotly), Route("/api/runs", listing),
                             Route("/api/runs/{k:int}", one)])


def serve(paths: Sequence, host: str = "127.0.0.1", port: int = 8050) -> None:
    """Serve the dashboard until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(paths)
    print(f"Erasus dashboard on http://{host}:{port}/ (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


PAGE = r"""<!doctype html>
<html><head><meta charset="utf-8"><title>Erasus dashboard</title><link rel="icon" href="data:,">
<script src="/plotly.min.js"></script>
<style>
body{font-family:system-ui,sans-serif;margin:1em 2em;color:#222}
header{display:flex;gap:1.5em;align-items:center;flex-wrap:wrap}
select{font-size:1em;padding:.2em}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:1em}
.card{border:1px solid #ddd;border-radius:6px;padding:.5em 1em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em;text-align:left}
.PASS{color:#137333;font-weight:600}.FAIL{color:#b3261e;font-weight:600}.PARTIAL{color:#b06000;font-weight:600}
.INCONCLUSIVE{color:#555;font-weight:600}.plot{height:340px}
</style></head>
<body>
<header><h2>Erasus: compare unlearning runs</h2>
<label>Run A <select id="run-a"></select></label>
<label>Run B <select id="run-b"></select></label>
<label>Per-class data <select id="split"><option>forget</option><option>retain</option><option selected>test</option></select></label>
</header>
<div class="grid">
 <div class="card" id="verdict-a"></div><div class="card" id="verdict-b"></div>
 <div class="card"><h3>Per-class accuracy</h3><div id="per-class" class="plot"></div></div>
 <div class="card"><h3>Membership attack scores (forget vs held-out)</h3><div id="attack" class="plot"></div></div>
 <div class="card"><h3>Prediction matrix, run A (forget set)</h3><div id="matrix-a" class="plot"></div></div>
 <div class="card"><h3>Prediction matrix, run B (forget set)</h3><div id="matrix-b" class="plot"></div></div>
 <div class="card"><h3>Embeddings, run A</h3><div id="embed-a" class="plot"></div></div>
 <div class="card"><h3>Embeddings, run B</h3><div id="embed-b" class="plot"></div></div>
 <div class="card"><h3>Layer-wise CKA to the retrained model</h3><div id="layers" class="plot"></div></div>
 <div class="card"><h3>Metrics</h3><div id="metrics"></div></div>
</div>
<script>
const cache = {};
async function getRun(k){ if(!(k in cache)){ const r = await fetch('/api/runs/'+k); cache[k] = await r.json(); } return cache[k]; }
function esc(s){ return String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c])); }
function num(v){ return (v === null || v === undefined) ? '' : (typeof v === 'number' ? v.toPrecision(4) : esc(v)); }
function verdictCard(id, run, tag){
  const v = run.verification, res = run.result || {};
  let h = `<h3>Run ${tag}: ${esc(run.name)}</h3><p>${esc(res.strategy || '')}${res.selector ? ' + ' + esc(res.selector) : ''}, ${esc(res.steps ?? '')} steps. ${esc(res.stop_reason || '')}</p>`;
  if(v){
    h += `<p>Verdict: <span class="${esc(v.verdict)}" data-verdict="${esc(v.verdict)}">${esc(v.verdict)}</span></p><table><tr><th>metric</th><th>value</th><th>retrained</th><th>difference (CI)</th><th>verdict</th></tr>`;
    for(const [n, m] of Object.entries(v.metrics)){
      h += `<tr><td>${esc(n)}</td><td>${num(m.value)}</td><td>${num(m.reference)}</td><td>[${num(m.delta_ci[0])}, ${num(m.delta_ci[1])}]</td><td class="${esc(m.verdict)}">${esc(m.verdict)}</td></tr>`;
    }
    h += '</table>';
  } else { h += '<p>No verification against a retrained model in this run.</p>'; }
  document.getElementById(id).innerHTML = h;
}
const layout = (x) => Object.assign({margin:{l:50,r:10,t:10,b:40}, legend:{font:{size:10}}}, x||{});
function perClass(a, b, split){
  const traces = [];
  const add = (run, tag, models) => { const pc = run.views.per_class[split];
    for(const m of models){ if(m in pc.accuracy) traces.push({type:'bar', name: tag + ': ' + m, x: pc.classes.map(String), y: pc.accuracy[m].map(v => v === null ? null : 100*v)}); } };
  add(a, 'A', ['unlearned']); add(b, 'B', ['unlearned']); add(a, 'A', ['retrained', 'original']);
  Plotly.react('per-class', traces, layout({barmode:'group', yaxis:{title:'accuracy (%)', range:[0,100]}, xaxis:{title:'class'}}));
}
function attack(a, b){
  const traces = [];
  for(const [run, tag] of [[a,'A'],[b,'B']]){ const s = run.views.attack.scores.unlearned;
    traces.push({type:'histogram', name: tag + ': forget', x: s.forget, opacity:0.55, histnorm:'probability density'});
    traces.push({type:'histogram', name: tag + ': held-out', x: s.holdout, opacity:0.55, histnorm:'probability density'}); }
  const r = a.views.attack.scores.retrained;
  if(r) traces.push({type:'histogram', name: 'retrained: forget', x: r.forget, opacity:0.4, histnorm:'probability density'});
  Plotly.react('attack', traces, layout({barmode:'overlay', xaxis:{title:'-log10 loss (higher: looks like a member)'}}));
}
function matrix(id, run){ const M = run.views.prediction_matrices.unlearned.forget;
  Plotly.react(id, [{type:'heatmap', z: M, colorscale:[[0,'#f7fbff'],[1,'#08306b']], x: M.map((_, i) => String(i)), y: M.map((_, i) => String(i))}],
    layout({xaxis:{title:'predicted'}, yaxis:{title:'true class', autorange:'reversed'}})); }
function embed(id, run){ const p = run.views.embeddings.points; const traces = [];
  for(const m of ['unlearned', 'retrained']){ if(!(m in p)) continue;
    for(const [g, pts] of Object.entries(p[m])) traces.push({type:'scattergl', mode:'markers', name: m + ': ' + g,
      x: pts.map(q => q[0]), y: pts.map(q => q[1]), marker:{size:4, opacity: m === 'retrained' ? 0.25 : 0.7}}); }
  Plotly.react(id, traces, layout()); }
function layers(a, b){ const traces = [];
  for(const [run, tag] of [[a,'A'],[b,'B']]){ const L = run.views.layers;
    traces.push({type:'scatter', mode:'lines+markers', name: tag + ': unlearned', x: L.layers, y: L.cka.unlearned});
    if(tag === 'A' && L.cka.original) traces.push({type:'scatter', mode:'lines+markers', name:'original', x: L.layers, y: L.cka.original, line:{dash:'dot'}}); }
  Plotly.react('layers', traces, layout({yaxis:{title:'linear CKA', range:[0,1.05]}, xaxis:{title:'layer'}})); }
function metrics(a, b){
  const keys = new Set(); for(const r of [a, b]) for(const m of Object.values(r.metrics || {})) for(const k of Object.keys(m)) keys.add(k);
  let h = '<table><tr><th>model</th>' + [...keys].map(k => `<th>${esc(k)}</th>`).join('') + '</tr>';
  for(const [run, tag] of [[a,'A'],[b,'B']]) for(const [m, d] of Object.entries(run.metrics || {}))
    h += `<tr><td>${tag}: ${esc(m)}</td>` + [...keys].map(k => `<td>${num(d[k])}</td>`).join('') + '</tr>';
  document.getElementById('metrics').innerHTML = h + '</table>';
}
async function render(){
  const a = await getRun(document.getElementById('run-a').value), b = await getRun(document.getElementById('run-b').value);
  verdictCard('verdict-a', a, 'A'); verdictCard('verdict-b', b, 'B'); metrics(a, b);
  if(a.views && b.views){ perClass(a, b, document.getElementById('split').value); attack(a, b); matrix('matrix-a', a); matrix('matrix-b', b);
    embed('embed-a', a); embed('embed-b', b); layers(a, b); }
  document.body.dataset.rendered = document.getElementById('run-a').value + ',' + document.getElementById('run-b').value + ',' + document.getElementById('split').value;
}
async function main(){
  const runs = await (await fetch('/api/runs')).json();
  for(const id of ['run-a', 'run-b']){ const s = document.getElementById(id);
    for(const r of runs){ const o = document.createElement('option'); o.value = r.id; o.textContent = r.label; s.appendChild(o); }
    s.addEventListener('change', render); }
  document.getElementById('split').addEventListener('change', render);
  if(runs.length > 1) document.getElementById('run-b').value = runs[1].id;
  await render();
}
main();
</script></body></html>
"""
