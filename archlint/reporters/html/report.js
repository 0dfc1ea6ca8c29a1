// archlint HTML report viewer. Reads the JSON in #archlint-data; lays the graph out with dagre.
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("archlint-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var NODE_W = 200, NODE_H = 50;
  var START_VISIBLE = 24;    // boxes shown when the page opens: a ResNet shows its stages
  var OPEN_STEP = 40;        // boxes a click on a module may add at most
  var MAX_VISIBLE = 500;     // beyond this dagre gets slow: expand module by module
  var SEV_RANK = { info: 0, warning: 1, error: 2 };

  function h(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function s(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;
    return e;
  }
  function num(n) { return n == null ? "?" : Number(n).toLocaleString("en-US"); }
  function short(n) {
    if (n == null) return "?";
    var units = [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]];
    for (var i = 0; i < units.length; i++) if (n >= units[i][0]) return (n / units[i][0]).toFixed(2) + units[i][1];
    return String(n);
  }
  function shapeText(shape) { return shape ? shape.join("x") : "?"; }
  function axisText(rf, key) {
    if (!rf) return "?";
    return rf.map(function (a) {
      if (a != null && a.global) return key === "size" ? "global" : "-";
      return a == null || a[key] == null ? "?" : String(a[key]);
    }).join("x");
  }
  function rfText(node) {
    if (node.rf_global) return "RF global";
    if (!node.rf) return "RF -";
    return "RF " + axisText(node.rf, "size") + " s" + axisText(node.rf, "stride");
  }
  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "\u2026" : text; }

  var summary = DATA.summary;
  function plural(n, word) { return n + " " + word + (n === 1 || word === "info" ? "" : "s"); }
  document.getElementById("summary").textContent =
    plural(summary.findings, "finding") + " (" + plural(summary.error, "error") + ", " +
    plural(summary.warning, "warning") + ", " + plural(summary.info, "info") + ") in " +
    plural(summary.models, "model") +
    (summary.failed_targets ? ", " + plural(summary.failed_targets, "target") + " could not be analyzed" : "");


  function ModelView(m) {
    var self = this;
    this.m = m;
    var sec = this.section = h("section", { "class": "model", id: m.id, "data-op-count": m.nodes.length });
    sec.appendChild(h("h2", {}, m.title));
    var meta = [m.frontend, "input " + (m.input_shapes.map(shapeText).join(", ") || "?"), m.nodes.length + " ops"];
    if (m.totals) {
      meta.push("params " + num(m.totals.params) +
        (m.totals.frozen ? " (" + num(m.totals.frozen) + " frozen)" : ""));
      meta.push("MACs " + short(m.totals.macs));
    }
    if (m.sizes_summary) meta.push("sizes: " + m.sizes_summary);
    sec.appendChild(h("div", { "class": "meta" }, meta.join(" \u00b7 ")));
    if (m.error) sec.appendChild(h("div", { "class": "panel error-text" }, "could not be analyzed: " + m.error));
    m.notes.forEach(function (n) { sec.appendChild(h("div", { "class": "meta" }, "note: " + n)); });

    var layout = h("div", { "class": "layout" });
    sec.appendChild(layout);
    var wrap = h("div", { "class": "graph-wrap" });
    layout.appendChild(wrap);
    var side = h("div", { "class": "side" });
    layout.appendChild(side);

    var findingsPanel = h("div", { "class": "panel findings" });
    findingsPanel.appendChild(h("h3", {}, "Findings (" + m.findings.length + ")"));
    if (!m.findings.length) findingsPanel.appendChild(h("div", { "class": "empty" }, "none"));
    m.findings.forEach(function (f) {
      var item = h("div", { "class": "finding " + f.severity });
      item.appendChild(h("span", { "class": "code" }, f.code + " "));
      item.appendChild(h("span", { "class": "where" }, f.where));
      item.appendChild(h("div", {}, f.message));
      if (f.fix) item.appendChild(h("div", { "class": "fix" }, "fix: " + f.fix));
      if (f.sizes) item.appendChild(h("div", { "class": "where" }, "sizes: " + f.sizes));
      item.addEventListener("click", function () { self.reveal(f.nodes.concat(f.diverge)); });
      findingsPanel.appendChild(item);
    });
    side.appendChild(findingsPanel);
    this.details = h("div", { "class": "panel details" });
    this.details.appendChild(h("div", { "class": "empty" }, "Click an op for its details; click a module to open it."));
    side.appendChild(this.details);

    var plots = h("div", { "class": "plots" });
    var fig1 = h("figure", {});
    fig1.appendChild(h("figcaption", {}, "Receptive field along the longest path (log scale)"));
    fig1.insertAdjacentHTML("beforeend", m.rf_plot);
    var fig2 = h("figure", {});
    fig2.appendChild(h("figcaption", {}, "Admissible square input sizes (green: works, red: fails, grey: undecided)"));
    fig2.insertAdjacentHTML("beforeend", m.sizes_strip);
    plots.appendChild(fig1);
    plots.appendChild(fig2);
    sec.appendChild(plots);

    if (!m.nodes.length) { wrap.appendChild(h("div", { "class": "empty" }, "no graph")); return; }
    this.prepare();
    var bar = h("div", { "class": "toolbar" });
    [["expand all", function () { self.expandAll(); }], ["collapse", function () { self.collapseAll(); }],
     ["fit", function () { self.fit(); }]].forEach(function (b) {
      var button = h("button", { type: "button", "class": b[0].replace(" ", "-") }, b[0]);
      button.addEventListener("click", b[1]);
      bar.appendChild(button);
    });
    this.status = h("span", { "class": "status" });
    bar.appendChild(this.status);
    wrap.appendChild(bar);
    this.svg = s("svg", { "class": "graph" });
    var defs = s("defs");
    var marker = s("marker", { id: m.id + "-arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
      markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.appendChild(s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8c959f" }));
    defs.appendChild(marker);
    this.svg.appendChild(defs);
    this.viewport = s("g", { "class": "viewport" });
    this.svg.appendChild(this.viewport);
    wrap.appendChild(this.svg);
    this.panZoom();
  }

  ModelView.prototype.start = function () {
    if (!this.svg) return;
    this.initialExpansion();
    this.draw();
  };

  ModelView.prototype.prepare = function () {
    var m = this.m, self = this;
    this.expanded = {};
    this.ancestors = m.nodes.map(function (n) {   // group ids, outermost first
      var chain = [];
      for (var g = n.g; g != null; g = m.groups[g].parent) chain.unshift(g);
      return chain;
    });
    this.groupDepth = m.groups.map(function (g) {
      var d = 0;
      for (var p = g.parent; p != null; p = m.groups[p].parent) d++;
      return d;
    });
    this.groupOps = m.groups.map(function () { return 0; });
    this.groupSev = m.groups.map(function () { return -1; });
    this.groupParams = m.groups.map(function () { return 0; });
    this.nodeSev = m.nodes.map(function () { return -1; });
    m.findings.forEach(function (f) {
      f.nodes.forEach(function (i) { self.nodeSev[i] = Math.max(self.nodeSev[i], SEV_RANK[f.severity]); });
    });
    this.onPath = {};
    this.diverge = {};
    m.findings.forEach(function (f) {
      f.path.forEach(function (i) { self.onPath[i] = true; });
      f.diverge.forEach(function (i) { self.diverge[i] = true; });
    });
    m.nodes.forEach(function (n, i) {
      self.ancestors[i].forEach(function (g) {
        self.groupOps[g] += 1;
        self.groupSev[g] = Math.max(self.groupSev[g], self.nodeSev[i]);
        self.groupParams[g] += n.params || 0;
      });
    });
  };

  ModelView.prototype.visibleCount = function () {
    // boxes after expanding this.expanded: ops and collapsed groups whose ancestors are open
    var seen = {}, count = 0, self = this;
    this.ancestors.forEach(function (chain) {
      var key = self.repOf(chain);
      if (key === null) count++;
      else if (!seen[key]) { seen[key] = true; count++; }
    });
    return count;
  };

  ModelView.prototype.repOf = function (chain) {
    for (var k = 0; k < chain.length; k++) if (!this.expanded[chain[k]]) return chain[k];
    return null;
  };

  ModelView.prototype.expandTo = function (limit, only) {
    // breadth-first: open the shallowest groups while the view stays under the limit
    var m = this.m, self = this;
    var order = m.groups.map(function (g, i) { return i; })
      .filter(function (i) { return !only || only(i); })
      .sort(function (a, b) { return self.groupDepth[a] - self.groupDepth[b] || a - b; });
    var count = this.visibleCount();
    for (var k = 0; k < order.length; k++) {
      var g = order[k];
      if (this.expanded[g]) continue;
      var p = m.groups[g].parent;
      if (p != null && !this.expanded[p]) continue;
      this.expanded[g] = true;
      var next = this.visibleCount();
      if (next > limit) { delete this.expanded[g]; continue; }
      count = next;
    }
    return count;
  };

  ModelView.prototype.expandLevels = function (limit, within) {
    // open whole levels of modules (all stages, then all blocks...) while the view fits
    var m = this.m, self = this;
    var maxDepth = Math.max.apply(null, this.groupDepth.concat([0]));
    for (var d = 0; d <= maxDepth; d++) {
      var opened = [];
      for (var g = 0; g < m.groups.length; g++) {
        if (this.groupDepth[g] !== d || this.expanded[g]) continue;
        var p = m.groups[g].parent;
        if (p != null && !this.expanded[p]) continue;
        if (within != null && !this.inside(g, within)) continue;
        this.expanded[g] = true;
        opened.push(g);
      }
      if (this.visibleCount() > limit) {
        opened.forEach(function (g) { delete self.expanded[g]; });
        return;
      }
    }
  };

  ModelView.prototype.inside = function (g, ancestor) {
    for (var p = this.m.groups[g].parent; p != null; p = this.m.groups[p].parent) if (p === ancestor) return true;
    return false;
  };

  ModelView.prototype.initialExpansion = function () { this.expanded = {}; this.expandLevels(START_VISIBLE); };
  ModelView.prototype.expandAll = function () { this.expandTo(MAX_VISIBLE); this.draw(); };
  ModelView.prototype.collapseAll = function () { this.expanded = {}; this.draw(); };

  ModelView.prototype.reveal = function (ops) {
    var self = this;
    ops.forEach(function (i) { self.ancestors[i].forEach(function (g) { self.expanded[g] = true; }); });
    this.draw();
    if (ops.length) { this.select(ops[0]); this.centerOn("n" + ops[0]); }
  };

  ModelView.prototype.keyOf = function (i) {
    var g = this.repOf(this.ancestors[i]);
    return g === null ? "n" + i : "g" + g;
  };

  ModelView.prototype.draw = function () {
    var m = this.m, self = this;
    var G = new dagre.graphlib.Graph({ compound: true });
    G.setGraph({ rankdir: "TB", nodesep: 18, ranksep: 26, marginx: 20, marginy: 40 });
    G.setDefaultEdgeLabel(function () { return {}; });
    var clusters = {};
    function addCluster(g) {
      if (clusters[g]) return;
      clusters[g] = true;
      G.setNode("c" + g, { cluster: g, paddingTop: 18 });
      var p = m.groups[g].parent;
      if (p != null) { addCluster(p); G.setParent("c" + g, "c" + p); }
    }
    var placed = {};
    m.nodes.forEach(function (n, i) {
      var key = self.keyOf(i);
      if (placed[key]) return;
      placed[key] = true;
      G.setNode(key, { width: NODE_W, height: NODE_H, key: key });
      var chain = self.ancestors[i];
      var depth = key.charAt(0) === "n" ? chain.length : chain.indexOf(+key.slice(1));
      if (depth > 0) { addCluster(chain[depth - 1]); G.setParent(key, "c" + chain[depth - 1]); }
    });
    var edgeOnPath = {};
    m.edges.forEach(function (e) {
      var a = self.keyOf(e[0]), b = self.keyOf(e[1]);
      if (a === b) return;
      G.setEdge(a, b);
      if (self.onPath[e[0]] && self.onPath[e[1]]) edgeOnPath[a + ">" + b] = true;
    });
    dagre.layout(G);

    var vp = this.viewport;
    while (vp.firstChild) vp.removeChild(vp.firstChild);
    var layerClusters = s("g"), layerEdges = s("g"), layerNodes = s("g");
    vp.appendChild(layerClusters); vp.appendChild(layerEdges); vp.appendChild(layerNodes);
    this.positions = {};
    G.nodes().forEach(function (key) {
      var d = G.node(key);
      if (d.cluster == null) return;
      var box = s("g", { "class": "cluster", "data-group": d.cluster });
      box.appendChild(s("rect", { x: d.x - d.width / 2, y: d.y - d.height / 2, width: d.width, height: d.height }));
      var label = s("text", { x: d.x - d.width / 2 + 6, y: d.y - d.height / 2 + 13 },
        "\u25be " + m.groups[d.cluster].label);
      label.addEventListener("click", function (ev) {
        ev.stopPropagation();
        self.collapse(d.cluster);
      });
      box.appendChild(label);
      layerClusters.appendChild(box);
    });
    var marker = "url(#" + m.id + "-arrow)";
    G.edges().forEach(function (e) {
      var pts = G.edge(e).points || [];
      if (!pts.length) return;
      var d = "M" + pts.map(function (p) { return p.x.toFixed(1) + " " + p.y.toFixed(1); }).join(" L");
      var cls = "edge" + (edgeOnPath[e.v + ">" + e.w] ? " on-path" : "");
      layerEdges.appendChild(s("path", { "class": cls, d: d, "marker-end": marker }));
    });
    var opsShown = 0, groupsShown = 0;
    G.nodes().forEach(function (key) {
      var d = G.node(key);
      if (d.cluster != null) return;
      self.positions[key] = d;
      var isOp = key.charAt(0) === "n", idx = +key.slice(1);
      var sev = isOp ? self.nodeSev[idx] : self.groupSev[idx];
      var cls = "node " + (isOp ? "op" : "group");
      if (sev >= 0) cls += " finding sev-" + ["info", "warning", "error"][sev];
      if (isOp && m.nodes[idx].error) cls += " failed";
      if (isOp && self.diverge[idx]) cls += " diverge";
      var node = s("g", { "class": cls, transform: "translate(" + (d.x - NODE_W / 2) + "," + (d.y - NODE_H / 2) + ")" });
      node.appendChild(s("rect", { width: NODE_W, height: NODE_H }));
      if (isOp) {
        opsShown++;
        var n = m.nodes[idx];
        node.setAttribute("data-op", idx);
        node.appendChild(s("text", { x: 6, y: 14 }, clip(n.name, 30)));
        node.appendChild(s("text", { x: 6, y: 29, "class": "sub" }, clip(n.op + " \u00b7 " + shapeText(n.shape), 32)));
        node.appendChild(s("text", { x: 6, y: 43, "class": "sub" }, clip(rfText(n), 32)));
        node.appendChild(s("title", {}, n.name + (n.file ? "  " + n.file + (n.line ? ":" + n.line : "") : "")));
        node.addEventListener("click", function (ev) { ev.stopPropagation(); self.select(idx); });
      } else {
        groupsShown++;
        node.setAttribute("data-group", idx);
        node.setAttribute("data-count", self.groupOps[idx]);
        node.appendChild(s("text", { x: 6, y: 16 }, "\u25b8 " + clip(m.groups[idx].label, 28)));
        node.appendChild(s("text", { x: 6, y: 33, "class": "sub" },
          self.groupOps[idx] + " ops \u00b7 " + short(self.groupParams[idx]) + " params"));
        node.addEventListener("click", function (ev) { ev.stopPropagation(); self.expand(idx); });
      }
      layerNodes.appendChild(node);
    });
    this.width = G.graph().width || NODE_W;
    this.height = G.graph().height || NODE_H;
    this.svg.setAttribute("data-visible-ops", opsShown);
    this.svg.setAttribute("data-visible-groups", groupsShown);
    this.status.textContent = opsShown + " of " + m.nodes.length + " ops shown" +
      (groupsShown ? ", " + groupsShown + " modules closed" : "");
    if (this.selected != null && self.positions["n" + this.selected]) this.mark(this.selected);
    this.fit();
  };

  ModelView.prototype.expand = function (g) {
    this.expanded[g] = true;
    // a small module opens all the way; a big one shows its next level
    this.expandLevels(this.visibleCount() + OPEN_STEP, g);
    this.draw();
  };
  ModelView.prototype.collapse = function (g) {
    var m = this.m;
    delete this.expanded[g];
    for (var i = 0; i < m.groups.length; i++)
      for (var p = m.groups[i].parent; p != null; p = m.groups[p].parent) if (p === g) delete this.expanded[i];
    this.draw();
  };

  ModelView.prototype.mark = function (idx) {
    var prev = this.viewport.querySelectorAll("g.node.selected");
    for (var k = 0; k < prev.length; k++) prev[k].classList.remove("selected");
    var el = this.viewport.querySelector('g.node[data-op="' + idx + '"]');
    if (el) el.classList.add("selected");
  };

  ModelView.prototype.select = function (idx) {
    var m = this.m, n = m.nodes[idx];
    this.selected = idx;
    this.mark(idx);
    var d = this.details;
    while (d.firstChild) d.removeChild(d.firstChild);
    d.appendChild(h("h3", {}, n.name));
    var t = h("table");
    var rows = [
      ["op", n.op + (n.origin ? " (" + n.origin + ")" : "")],
      ["output", shapeText(n.shape)],
      ["RF size", n.rf_global ? "global" : axisText(n.rf, "size")],
      ["RF stride", n.rf_global ? "-" : axisText(n.rf, "stride")],
      ["RF padding", n.rf_global ? "-" : axisText(n.rf, "padding")],
      ["params", num(n.params) + (n.trainable != null && n.params ? " (" + num(n.trainable) + " trainable)" : "")],
      ["MACs", num(n.macs)],
      ["location", n.file ? n.file + (n.line ? ":" + n.line : "") : "-"]
    ];
    if (n.error) rows.push(["error", n.error]);
    Object.keys(n.attrs).forEach(function (k) { rows.push([k, n.attrs[k]]); });
    m.findings.forEach(function (f) {
      if (f.nodes.indexOf(idx) >= 0) rows.push([f.code, f.message]);
      else if (f.diverge.indexOf(idx) >= 0) rows.push([f.code, "the branches diverge here"]);
    });
    rows.forEach(function (r) {
      var tr = h("tr");
      tr.appendChild(h("td", {}, r[0]));
      tr.appendChild(h("td", {}, r[1]));
      t.appendChild(tr);
    });
    d.appendChild(t);
  };

  // --- pan and zoom over the viewBox ------------------------------------------------------
  ModelView.prototype.fit = function () {
    // the whole graph when it fits at a readable scale; else its top, at that scale
    var box = this.svg.getBoundingClientRect();
    var bw = box.width || 800, bh = box.height || 600;
    var scale = Math.min(bw / this.width, bh / this.height, 1.4);
    scale = Math.max(scale, 0.55);
    var vw = bw / scale, vh = bh / scale;
    this.view = { x: (this.width - vw) / 2, y: 0, w: vw, h: vh };
    this.applyView();
  };
  ModelView.prototype.applyView = function () {
    var v = this.view;
    this.svg.setAttribute("viewBox", v.x + " " + v.y + " " + v.w + " " + v.h);
  };
  ModelView.prototype.centerOn = function (key) {
    var p = this.positions[key], v = this.view;
    if (!p) return;
    if (p.x > v.x && p.x < v.x + v.w && p.y > v.y && p.y < v.y + v.h) return;  // in sight
    this.view.x = p.x - this.view.w / 2;
    this.view.y = p.y - this.view.h / 3;
    this.applyView();
  };
  ModelView.prototype.panZoom = function () {
    var self = this, drag = null;
    this.svg.addEventListener("wheel", function (ev) {
      ev.preventDefault();
      var box = self.svg.getBoundingClientRect(), v = self.view;
      if (ev.ctrlKey || ev.metaKey) {
        var f = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
        var px = v.x + (ev.clientX - box.left) / box.width * v.w, py = v.y + (ev.clientY - box.top) / box.height * v.h;
        v.w *= f; v.h *= f; v.x = px - (px - v.x) * f; v.y = py - (py - v.y) * f;
      } else {
        v.x += ev.deltaX * v.w / box.width; v.y += ev.deltaY * v.h / box.height;
      }
      self.applyView();
    }, { passive: false });
    this.svg.addEventListener("mousedown", function (ev) { drag = { x: ev.clientX, y: ev.clientY }; });
    window.addEventListener("mouseup", function () { drag = null; });
    window.addEventListener("mousemove", function (ev) {
      if (!drag) return;
      var box = self.svg.getBoundingClientRect(), v = self.view;
      v.x -= (ev.clientX - drag.x) * v.w / box.width; v.y -= (ev.clientY - drag.y) * v.h / box.height;
      drag = { x: ev.clientX, y: ev.clientY };
      self.applyView();
    });
  };
  var root = document.getElementById("models");
  DATA.models.forEach(function (m) {
    var view = new ModelView(m);
    root.appendChild(view.section);
    view.start();  // laid out once in the page, where its box has a size
  });
  document.body.setAttribute("data-ready", "1");
})();
