// The report page: builds every section from the JSON in #report-data (written by scssl-report)
// and draws the charts with Vega-Lite through vega-embed; the embedding maps are UMAP layouts that
// umap-js computes here from the neighbour graphs in the data. <body> carries data-charts (charts on
// the page), data-rendered (charts drawn so far), data-maps and data-maps-drawn (the same for the
// embedding maps) and data-done, so that a headless browser can tell a complete page; errors end up
// in data-errors (see the trap in the page head).
(function () {
  'use strict';
  var SCHEMA = 'https://vega.github.io/schema/vega-lite/v5.json';
  var AGGREGATES = { bio_conservation: 'Bio conservation', batch_correction: 'Batch correction', total: 'Total' };
  var GROUP_COLOURS = { domain: ['bio', 'batch', 'aggregate'], range: ['#5aa469', '#4a7fbf', '#e08a3c'] };

  var data = JSON.parse(document.getElementById('report-data').textContent);
  var root = document.getElementById('report');
  var charts = [];

  function add(parent, tag, attrs, text) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) e.textContent = text;
    parent.appendChild(e);
    return e;
  }
  function finite(v) { return typeof v === 'number' && isFinite(v); }
  function fmt(mean, sd) {
    if (!finite(mean)) return 'n/a';
    return mean.toFixed(3) + (finite(sd) ? ' ± ' + sd.toFixed(3) : '');
  }
  // lo/hi span mean ± sd (null without an sd: the rule is then left out) and a printed value.
  function withBounds(d) {
    d.lo = finite(d.mean) && finite(d.sd) ? d.mean - d.sd : null;
    d.hi = finite(d.mean) && finite(d.sd) ? d.mean + d.sd : null;
    d.text = fmt(d.mean, d.sd);
    return d;
  }
  function find(stats, row, metric) {
    for (var i = 0; i < stats.length; i++) if (stats[i].row === row && stats[i].metric === metric) return stats[i];
    return null;
  }
  // `spec` is a Vega-Lite spec, or a promise of one (the embedding maps).
  function chart(parent, spec, isMap) {
    charts.push({ div: add(parent, 'div', { 'class': 'chart' }, isMap ? 'computing the UMAP layout…' : undefined),
                  spec: spec, isMap: !!isMap });
  }
  function rowOrder(ds) { return ds.rows.map(function (r) { return r.key; }); }
  function metricNames(stats) {
    var names = [];
    stats.forEach(function (d) {
      var name = AGGREGATES[d.metric] || d.metric;
      if (names.indexOf(name) < 0) names.push(name);
    });
    return names;
  }

  // The scIB table: one column per metric, one row per method, a bar per cell (scIB's plottable
  // table in Vega-Lite), aggregates last.
  function scibSpec(ds) {
    var values = ds.scib.map(function (d) {
      return withBounds({ row: d.row, metric: AGGREGATES[d.metric] || d.metric, group: d.group, mean: d.mean, sd: d.sd, n: d.n });
    });
    return {
      data: { values: values },
      facet: { column: { field: 'metric', type: 'nominal', sort: metricNames(ds.scib), title: null,
                         header: { labelFontSize: 11, labelLimit: 120 } } },
      spacing: 4,
      spec: {
        width: 110,
        height: { step: 24 },
        encoding: { y: { field: 'row', type: 'nominal', sort: rowOrder(ds), title: null } },
        layer: [
          { mark: { type: 'bar', opacity: 0.75, cornerRadiusEnd: 2 },
            encoding: {
              x: { field: 'mean', type: 'quantitative', scale: { domain: [0, 1], clamp: true }, axis: null },
              color: { field: 'group', type: 'nominal', scale: GROUP_COLOURS, legend: { title: null, orient: 'bottom' } },
              tooltip: [{ field: 'row', title: 'row' }, { field: 'metric' }, { field: 'text', title: 'mean ± sd' }, { field: 'n', title: 'seeds' }]
            } },
          { mark: { type: 'text', align: 'right', dx: -2, fontSize: 10 },
            encoding: { x: { datum: 1, type: 'quantitative' }, text: { field: 'text' } } }
        ]
      },
      config: { view: { stroke: '#eee' } }
    };
  }

  // The range of a field and its whiskers with a margin, within [0, 1] where the scores are (one
  // point alone would otherwise give an empty scale).
  function span(values, field) {
    var lo = Infinity, hi = -Infinity;
    values.forEach(function (v) {
      [v[field], v[field + '_lo'], v[field + '_hi']].forEach(function (x) {
        if (finite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); }
      });
    });
    if (!finite(lo)) return [0, 1];
    return [lo >= 0 ? Math.max(0, lo - 0.05) : lo - 0.05, hi <= 1 ? Math.min(1, hi + 0.05) : hi + 0.05];
  }

  // Bio conservation against batch correction, one point per row with ± sd whiskers.
  function scatterSpec(ds) {
    var values = [];
    ds.rows.forEach(function (r) {
      var bio = find(ds.scib, r.key, 'bio_conservation'), batch = find(ds.scib, r.key, 'batch_correction');
      if (!bio || !batch || !finite(bio.mean) || !finite(batch.mean)) return;
      var b = withBounds({ mean: bio.mean, sd: bio.sd }), c = withBounds({ mean: batch.mean, sd: batch.sd });
      values.push({ row: r.key, bio: bio.mean, bio_lo: b.lo, bio_hi: b.hi, bio_text: b.text,
                    batch: batch.mean, batch_lo: c.lo, batch_hi: c.hi, batch_text: c.text });
    });
    var x = { field: 'batch', type: 'quantitative', title: 'Batch correction', scale: { domain: span(values, 'batch') } };
    var y = { field: 'bio', type: 'quantitative', title: 'Bio conservation', scale: { domain: span(values, 'bio') } };
    return {
      data: { values: values },
      width: 420,
      height: 320,
      encoding: { x: x, y: y, color: { field: 'row', type: 'nominal', sort: rowOrder(ds), title: null } },
      layer: [
        { mark: 'rule', encoding: { x: { field: 'batch_lo', type: 'quantitative', title: x.title, scale: x.scale }, x2: { field: 'batch_hi' } } },
        { mark: 'rule', encoding: { y: { field: 'bio_lo', type: 'quantitative', title: y.title, scale: y.scale }, y2: { field: 'bio_hi' } } },
        { mark: { type: 'point', filled: true, size: 90 },
          encoding: { tooltip: [{ field: 'row' }, { field: 'bio_text', title: 'Bio' }, { field: 'batch_text', title: 'Batch' }] } },
        { mark: { type: 'text', align: 'left', dx: 8, dy: -6, fontSize: 11 }, encoding: { text: { field: 'row' } } }
      ]
    };
  }

  // Annotation or modality metrics: one bar chart per metric with ± sd whiskers.
  function metricBarsSpec(ds, stats, unitRange) {
    var values = stats.map(function (d) { return withBounds({ row: d.row, metric: d.metric, mean: d.mean, sd: d.sd, n: d.n }); });
    var x = { field: 'mean', type: 'quantitative', title: 'mean over seeds' };
    if (unitRange) x.scale = { domain: [0, 1] };
    return {
      data: { values: values },
      facet: { column: { field: 'metric', type: 'nominal', sort: metricNames(stats), title: null } },
      spec: {
        width: 160,
        height: { step: 22 },
        encoding: { y: { field: 'row', type: 'nominal', sort: rowOrder(ds), title: null } },
        layer: [
          { mark: { type: 'bar', color: '#8e7cc3' },
            encoding: { x: x, tooltip: [{ field: 'row' }, { field: 'metric' }, { field: 'text', title: 'mean ± sd' }, { field: 'n', title: 'seeds' }] } },
          { mark: 'rule', encoding: { x: { field: 'lo', type: 'quantitative', title: x.title }, x2: { field: 'hi' } } },
          { mark: { type: 'text', align: 'left', dx: 3, fontSize: 10 }, encoding: { x: x, text: { field: 'text' } } }
        ]
      },
      resolve: { scale: { x: 'independent' } }
    };
  }

  // The augmentation ablation: Bio, Batch, Total (and annotation macro F1) per augmentation label,
  // one panel per combination of the other labels.
  function augmentationSpec(ds) {
    var measures = ['Bio conservation', 'Batch correction', 'Total'];
    var values = [];
    ds.rows.forEach(function (r) {
      var aug = r.labels.augmentation;
      if (aug === undefined) return;
      var rest = Object.keys(r.labels).filter(function (k) { return k !== 'augmentation'; })
        .map(function (k) { return r.labels[k]; }).filter(function (v) { return v; }).join(' · ') || 'all';
      function push(stat, measure) {
        if (stat && finite(stat.mean)) values.push(withBounds({ panel: rest, augmentation: aug, measure: measure, mean: stat.mean, sd: stat.sd }));
      }
      Object.keys(AGGREGATES).forEach(function (m) { push(find(ds.scib, r.key, m), AGGREGATES[m]); });
      var f1 = find(ds.annotation, r.key, 'macro_f1');
      if (f1 && measures.length === 3) measures.push('Annotation macro F1');
      push(f1, 'Annotation macro F1');
    });
    return {
      data: { values: values },
      facet: { column: { field: 'panel', type: 'nominal', title: null } },
      spec: {
        width: { step: 22, for: 'offset' },
        height: 240,
        encoding: {
          x: { field: 'augmentation', type: 'nominal', title: 'augmentation', axis: { labelAngle: -30 } },
          xOffset: { field: 'measure', type: 'nominal', sort: measures },
          color: { field: 'measure', type: 'nominal', sort: measures, title: null, legend: { orient: 'bottom' } }
        },
        layer: [
          { mark: 'bar', encoding: { y: { field: 'mean', type: 'quantitative', title: 'score (mean over seeds)' },
                                     tooltip: [{ field: 'augmentation' }, { field: 'measure' }, { field: 'text', title: 'mean ± sd' }] } },
          { mark: 'rule', encoding: { y: { field: 'lo', type: 'quantitative', title: 'score (mean over seeds)' }, y2: { field: 'hi' }, color: { value: '#333' } } }
        ]
      },
      resolve: { scale: { x: 'independent' } }
    };
  }

  function computeSpec(ds) {
    var values = ds.compute.map(function (c) {
      var fit = withBounds({ mean: c.fit_seconds, sd: c.fit_seconds_sd }), peak = withBounds({ mean: c.peak_rss_mb, sd: c.peak_rss_mb_sd });
      return { row: c.row, fit: c.fit_seconds, fit_lo: fit.lo, fit_hi: fit.hi, fit_text: fit.text,
               peak: c.peak_rss_mb, peak_lo: peak.lo, peak_hi: peak.hi, peak_text: peak.text };
    });
    function panel(field, title, colour) {
      var y = { field: 'row', type: 'nominal', sort: rowOrder(ds), title: null };
      return {
        width: 280,
        height: { step: 22 },
        layer: [
          { mark: { type: 'bar', color: colour },
            encoding: { y: y, x: { field: field, type: 'quantitative', title: title }, tooltip: [{ field: 'row' }, { field: field + '_text', title: title }] } },
          { mark: 'rule', encoding: { y: y, x: { field: field + '_lo', type: 'quantitative', title: title }, x2: { field: field + '_hi' } } }
        ]
      };
    }
    return { data: { values: values }, hconcat: [panel('fit', 'training time (s)', '#9c9c9c'), panel('peak', 'peak memory (MB resident)', '#c28e5c')] };
  }

  // A small deterministic random stream (xorshift32), so that a map is the same on every opening.
  function seededRandom(seed) {
    var state = seed >>> 0 || 1;
    return function () {
      state ^= state << 13; state >>>= 0;
      state ^= state >>> 17;
      state ^= state << 5; state >>>= 0;
      return state / 4294967296;
    };
  }

  // UMAP of one row's sampled cells with umap-js, from the exact neighbours the report tool found
  // (each cell first among its own k), with scanpy's defaults: 15 neighbours, min_dist 0.5, spread 1.
  // The epochs run in slices so that the page stays responsive; resolves to [[x, y], ...].
  function umapLayout(e) {
    return new Promise(function (resolve, reject) {
      var n = e.label.length, indices = [], distances = [];
      for (var i = 0; i < n; i++) {
        indices.push(e.knn.slice(i * e.k, (i + 1) * e.k));
        distances.push(e.knn_dist.slice(i * e.k, (i + 1) * e.k));
      }
      var umap = new UMAP.UMAP({ nComponents: 2, nNeighbors: e.k, minDist: 0.5, spread: 1.0, random: seededRandom(1 + e.seed) });
      umap.setPrecomputedKNN(indices, distances);
      // With the neighbours given, umap-js uses its input only for the number of cells.
      var epochs = umap.initializeFit(indices.map(function () { return []; })), done = 0;
      (function slice() {
        try {
          for (var stop = Math.min(epochs, done + 25); done < stop; done++) umap.step();
          if (done < epochs) setTimeout(slice, 0); else resolve(umap.getEmbedding());
        } catch (error) {
          reject(error);
        }
      })();
    });
  }

  // One run's embedding map, coloured by cell type and by batch.
  function embeddingSpec(e, xy) {
    function name(names, code) { return code >= 0 ? names[code] : '(missing)'; }
    var values = xy.map(function (p, i) {
      return { x: p[0], y: p[1], label: name(e.labels, e.label[i]), batch: name(e.batches, e.batch[i]) };
    });
    function panel(field, title) {
      return {
        width: 250,
        height: 250,
        title: { text: 'by ' + title, fontSize: 11, fontWeight: 'normal' },
        mark: { type: 'circle', size: 9, opacity: 0.75 },
        encoding: {
          x: { field: 'x', type: 'quantitative', axis: null, scale: { zero: false } },
          y: { field: 'y', type: 'quantitative', axis: null, scale: { zero: false } },
          color: { field: field, type: 'nominal', title: title, scale: { scheme: 'tableau20' }, legend: { symbolLimit: 40, labelLimit: 140 } }
        }
      };
    }
    return {
      data: { values: values },
      title: { text: e.row, subtitle: 'UMAP of ' + xy.length + ' of ' + e.n_total + ' cells (run with seed ' + e.seed + ')' },
      hconcat: [panel('label', e.label_key || 'cell type'), panel('batch', e.batch_key || 'batch')],
      resolve: { scale: { color: 'independent' } },
      config: { view: { stroke: '#eee' } }
    };
  }

  // The maps' layouts run one after another, so that the first map appears as soon as it can; one
  // that fails is reported on its chart and the next one still runs.
  var layouts = Promise.resolve();
  function mapSpec(e) {
    var layout = layouts.then(function () { return umapLayout(e); });
    layouts = layout.catch(function () {});
    return layout.then(function (xy) { return embeddingSpec(e, xy); });
  }

  function runsTable(parent, runs) {
    var table = add(parent, 'table', { 'class': 'runs' });
    var head = add(table, 'tr');
    ['row', 'seed', 'status', 'error', 'folder'].forEach(function (h) { add(head, 'th', {}, h); });
    runs.forEach(function (r) {
      var tr = add(table, 'tr');
      add(tr, 'td', {}, r.row);
      add(tr, 'td', {}, String(r.seed));
      add(tr, 'td', {}, r.status);
      add(tr, 'td', { 'class': 'error' }, r.error || '');
      add(tr, 'td', {}, r.dir);
    });
  }

  // ---- the page ----
  var finished = data.runs.filter(function (r) { return r.status === 'ok'; }).length;
  add(root, 'p', { 'class': 'meta' }, 'Generated ' + data.generated + ' from ' + data.inputs.join(', ') + ': ' +
      data.runs.length + ' run(s), ' + finished + ' finished, ' + (data.runs.length - finished) + ' failed or pending.');
  add(root, 'p', { 'class': 'meta' }, 'A row is one combination of the labels ' +
      (data.axes.length ? data.axes.join(', ') : '(none)') + '; numbers are mean ± sd over its seeds (failed runs are left out).');
  if (data.datasets.length > 1) {
    var list = add(add(root, 'nav'), 'ul');
    data.datasets.forEach(function (ds, i) { add(add(list, 'li'), 'a', { href: '#dataset-' + i }, ds.name); });
  }

  data.datasets.forEach(function (ds, i) {
    var section = add(root, 'section', { id: 'dataset-' + i });
    add(section, 'h2', {}, 'Data set: ' + ds.name);
    var left = data.runs.filter(function (r) { return r.dataset === ds.name && r.status !== 'ok'; });
    if (ds.scib.length) {
      add(section, 'h3', {}, 'scIB metrics');
      add(section, 'p', { 'class': 'caption' }, (ds.scaled ? 'Min-max scaled across the runs of this data set, then ' : '') +
          'mean ± sd over seeds; Bio conservation and Batch correction are the means of their metrics, Total = 0.6 Bio + 0.4 Batch. Rows by Total.');
      chart(section, scibSpec(ds));
      add(section, 'h3', {}, 'Bio conservation vs batch correction');
      chart(section, scatterSpec(ds));
    }
    if (ds.annotation.length) {
      add(section, 'h3', {}, 'Cell-type annotation (held-out query batches)');
      chart(section, metricBarsSpec(ds, ds.annotation, true));
    }
    if (ds.modality.length) {
      add(section, 'h3', {}, 'Missing-modality prediction');
      chart(section, metricBarsSpec(ds, ds.modality, false));
    }
    if (ds.rows.some(function (r) { return r.labels.augmentation !== undefined; }) && ds.scib.length) {
      add(section, 'h3', {}, 'Augmentation ablation');
      chart(section, augmentationSpec(ds));
    }
    if (ds.compute.length) {
      add(section, 'h3', {}, 'Compute cost');
      add(section, 'p', { 'class': 'caption' }, 'Wall time of the training (fit) stage and the highest resident memory of the run, mean ± sd over seeds.');
      chart(section, computeSpec(ds));
    }
    if (ds.embeddings.length) {
      add(section, 'h3', {}, 'Embeddings');
      add(section, 'p', { 'class': 'caption' }, 'UMAP (scanpy\'s defaults: 15 neighbours, min_dist 0.5) of a fixed random ' +
          'subsample of at most ' + data.layout_cells + ' cells of each row\'s lowest-seed run. The report tool finds ' +
          'the exact neighbours; this page computes the layouts with umap-js, one map after another.');
      var grid = add(section, 'div', { 'class': 'grid' });
      ds.embeddings.forEach(function (e) { chart(grid, mapSpec(e), true); });
    }
    if (ds.notes.length) {
      var notes = add(section, 'ul', { 'class': 'notes' });
      ds.notes.forEach(function (n) { add(notes, 'li', {}, n); });
    }
    if (left.length) {
      add(section, 'h3', {}, 'Runs not included');
      runsTable(section, left);
    }
  });

  var maps = charts.filter(function (c) { return c.isMap; }).length;
  document.body.dataset.charts = String(charts.length);
  document.body.dataset.rendered = '0';
  document.body.dataset.maps = String(maps);
  document.body.dataset.mapsDrawn = '0';
  var rendered = 0, mapsDrawn = 0;
  var options = { renderer: 'svg', actions: { export: true, source: false, compiled: false, editor: false } };
  Promise.all(charts.map(function (c, i) {
    return Promise.resolve(c.spec).then(function (spec) {
      spec.$schema = SCHEMA;
      return vegaEmbed(c.div, spec, options);
    }).then(function () {
      rendered += 1;
      document.body.dataset.rendered = String(rendered);
      if (c.isMap) document.body.dataset.mapsDrawn = String(++mapsDrawn);
    }).catch(function (error) {
      reportError('chart ' + (i + 1) + ': ' + ((error && error.message) || error));
    });
  })).then(function () { document.body.dataset.done = 'true'; });
})();
