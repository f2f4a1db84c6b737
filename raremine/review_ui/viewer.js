// raremine review: the candidate viewer (zoom, pan, hot spot, overlay outline, side by side).
// A Streamlit components-v2 module: everything runs in the page, nothing is fetched from elsewhere.
// Keys (never while a text field has focus): + / - / 0 zoom, arrows pan, O overlay, S side by side,
// H hot spot. The state a reviewer chooses (overlay, side by side, hot spot) is kept in localStorage.

const TEXT_TAGS = new Set(["INPUT", "TEXTAREA", "SELECT"]);
const MAX_ZOOM = 32;
const STEP = Math.SQRT2;

function typing(e) {
  const path = e.composedPath ? e.composedPath() : [e.target];
  for (const el of path) {
    if (!el || !el.tagName) continue;
    if (el.isContentEditable) return true;
    if (TEXT_TAGS.has(el.tagName)) {
      const t = (el.type || "").toLowerCase();
      if (!["checkbox", "radio", "range", "button", "submit", "reset", "color", "file"].includes(t)) return true;
    }
  }
  return false;
}

function prefs(reviewer) {
  const key = "raremine.viewer." + reviewer;
  let p = {};
  try { p = JSON.parse(localStorage.getItem(key) || "{}"); } catch (_) { p = {}; }
  return {
    get: (k, d) => (k in p ? p[k] : d),
    set: (k, v) => { p[k] = v; try { localStorage.setItem(key, JSON.stringify(p)); } catch (_) {} },
  };
}

function svgOutline(d) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "rm-outline");
  svg.setAttribute("viewBox", `0 0 ${d.w} ${d.h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  for (const c of d.contours || []) {
    const poly = document.createElementNS(ns, c.length > 2 ? "polygon" : "polyline");
    poly.setAttribute("points", c.map((p) => `${p[0]},${p[1]}`).join(" "));
    svg.appendChild(poly);
  }
  (d.spots || []).forEach((spot, i) => {
    const m = document.createElementNS(ns, "circle");
    m.setAttribute("cx", spot.peak[0] + 0.5);
    m.setAttribute("cy", spot.peak[1] + 0.5);
    m.setAttribute("class", "rm-peak");
    m.dataset.spot = String(i);
    svg.appendChild(m);
  });
  return svg;
}

function makePane(d, src, label) {
  const pane = document.createElement("div");
  pane.className = "rm-pane";
  pane.dataset.pane = label;
  const stage = document.createElement("div");
  stage.className = "rm-stage";
  stage.style.width = d.w + "px";
  stage.style.height = d.h + "px";
  const img = document.createElement("img");
  img.className = "rm-img";
  img.alt = label;
  img.draggable = false;
  if (label === "image") img.src = src;
  else img.dataset.src = src; // the score map beside the image: decoded only when shown
  img.style.width = d.w + "px";
  img.style.height = d.h + "px";
  stage.appendChild(img);
  if (label === "image" && d.heat) {
    const tint = document.createElement("img");
    tint.className = "rm-tint";
    tint.dataset.src = d.heat; // decoded only when a tint is asked for
    tint.draggable = false;
    tint.style.width = d.w + "px";
    tint.style.height = d.h + "px";
    stage.appendChild(tint);
  }
  if (d.contours && d.contours.length) stage.appendChild(svgOutline(d));
  pane.appendChild(stage);
  const badge = document.createElement("div");
  badge.className = "rm-badge";
  badge.textContent = label === "image" ? "" : "score map";
  pane.appendChild(badge);
  return pane;
}

let current = null; // the mounted viewer (one per page)
// host(parent): from host.js, put before this file

export default function (component) {
  const { data, parentElement } = component;
  if (current) current.destroy();
  const d = data || {};
  performance.mark("rm-mount");
  const root = document.createElement("div");
  root.className = "rm-viewer";
  root.dataset.zoom = "1";
  root.dataset.item = d.name || "";
  host(parentElement).replaceChildren(root);
  const pref = prefs(d.reviewer || "");
  const state = {
    zoom: 1, // relative to the whole image fitted into the column
    cx: d.w / 2, // the image point at the centre of the view
    cy: d.h / 2,
    overlay: pref.get("overlay", true),
    side: pref.get("side", false) && !!d.heat,
    hot: pref.get("hot", false) && !!(d.spots && d.spots.length),
    spot: 0, // which hot spot (hottest first)
    fit: 1,
  };

  const bar = document.createElement("div");
  bar.className = "rm-bar";
  const btn = (text, title, fn, name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.title = title;
    b.dataset.action = name;
    b.addEventListener("click", (e) => { e.preventDefault(); fn(); });
    bar.appendChild(b);
    return b;
  };
  btn("−", "zoom out (-)", () => zoomBy(1 / STEP), "zoom-out");
  const zl = document.createElement("span");
  zl.className = "rm-zoom";
  bar.appendChild(zl);
  btn("+", "zoom in (+, wheel)", () => zoomBy(STEP), "zoom-in");
  btn("fit", "whole image (0)", () => reset(), "fit");
  const spots = d.spots || [];
  const bHot = spots.length
    ? btn("hot spot", "jump to the score map's peak with a full-resolution crop; again: the next hot spot (H)", () => toggleHot(), "hot")
    : null;
  const bOv = d.contours ? btn("overlay", "outline of the hot region on / off (O)", () => toggleOverlay(), "overlay") : null;
  const bSide = d.heat ? btn("side by side", "raw image and score map side by side (S)", () => toggleSide(), "side") : null;
  const info = document.createElement("span");
  info.className = "rm-info";
  bar.appendChild(info);
  root.appendChild(bar);

  const body = document.createElement("div");
  body.className = "rm-body";
  root.appendChild(body);
  const panes = document.createElement("div");
  panes.className = "rm-panes";
  body.appendChild(panes);
  const main = makePane(d, d.img, "image");
  const mainImg = main.querySelector(".rm-img");
  // "drawn" marks (for tests and the latency benchmark) that this candidate's picture is on the screen
  const shown = () => { performance.mark("rm-drawn"); root.dataset.drawn = "1"; document.documentElement.dataset.rmDrawn = d.name || ""; };
  if (mainImg.complete && mainImg.naturalWidth) shown();
  else mainImg.addEventListener("load", shown, { once: true });
  panes.appendChild(main);
  const heatPane = d.heat ? makePane(d, d.heat, "map") : null;
  if (heatPane) panes.appendChild(heatPane);
  let cropBox = null;
  if (spots.length) {
    cropBox = document.createElement("figure");
    cropBox.className = "rm-crop";
    const ci = document.createElement("img");
    ci.alt = "hot spot at full resolution";
    ci.draggable = false;
    cropBox.appendChild(ci);
    cropBox.appendChild(document.createElement("figcaption"));
    body.appendChild(cropBox);
  }
  function showSpot() {
    if (!cropBox) return;
    const sp = spots[state.spot];
    cropBox.querySelector("img").dataset.src = sp.crop; // decoded only when the crop is shown
    cropBox.querySelector("figcaption").textContent =
      `hot spot ${state.spot + 1} of ${spots.length}, full resolution (${sp.crop_size[0]}×${sp.crop_size[1]} px at x ${sp.crop_xy[0]}, y ${sp.crop_xy[1]})`;
    cropBox.dataset.spot = String(state.spot);
  }
  showSpot();

  function layout() {
    const total = Math.max(160, body.clientWidth || parentElement.host?.clientWidth || 600);
    const showCrop = state.hot && !!cropBox;
    // the whole image fits below the viewer's top on the screen (the page scrolls for the rest)
    const top = main.getBoundingClientRect().top + window.scrollY;
    const maxH = Math.max(220, Math.round(window.innerHeight - top - 24));
    // the crop goes beside the image in a wide column, below it in a narrow one (the image keeps its size)
    const beside = showCrop && total >= 640;
    const cropW = showCrop ? Math.round(Math.min(beside ? total * 0.3 : total, 2 * spots[0].crop_size[0], maxH * 0.6)) : 0;
    body.style.flexWrap = beside ? "nowrap" : "wrap";
    if (cropBox) cropBox.style.display = showCrop ? "" : "none";
    if (heatPane) heatPane.style.display = state.side ? "" : "none";
    const avail = beside ? total - cropW - 8 : total;
    const pw = Math.max(80, state.side && heatPane ? Math.floor((avail - 8) / 2) : avail);
    panes.style.width = avail + "px";
    state.fit = Math.min(pw / d.w, maxH / d.h);
    const ph = Math.max(40, Math.round(d.h * state.fit));
    for (const p of [main, heatPane]) {
      if (!p) continue;
      p.style.width = (state.side && heatPane ? pw : Math.min(pw, Math.round(d.w * state.fit))) + "px";
      p.style.height = ph + "px";
    }
    if (cropBox) {
      const ci = cropBox.querySelector("img");
      ci.style.width = cropW + "px";
      const cs = spots[state.spot].crop_size;
      ci.style.height = Math.round((cropW * cs[1]) / cs[0]) + "px";
      cropBox.style.width = cropW + "px";
    }
    draw();
  }

  function clampCentre() {
    const pw = main.clientWidth, ph = main.clientHeight;
    const s = state.fit * state.zoom;
    const hw = pw / (2 * s), hh = ph / (2 * s);
    // zoomed in, any image point (an edge's too) can be brought to the centre; at fit the image is centred
    state.cx = hw * 2 >= d.w ? d.w / 2 : Math.min(Math.max(state.cx, 0), d.w);
    state.cy = hh * 2 >= d.h ? d.h / 2 : Math.min(Math.max(state.cy, 0), d.h);
  }

  function draw() {
    clampCentre();
    const s = state.fit * state.zoom;
    for (const p of [main, heatPane]) {
      if (!p) continue;
      const stage = p.firstChild;
      const tx = p.clientWidth / 2 - state.cx * s;
      const ty = p.clientHeight / 2 - state.cy * s;
      stage.style.transform = `translate(${tx}px, ${ty}px) scale(${s})`;
      p.classList.toggle("rm-pixelated", s >= 3);
      const outline = stage.querySelector(".rm-outline");
      if (outline) {
        outline.style.display = state.overlay ? "" : "none";
        // lines and marks keep their size on the screen whatever the zoom (the stage is scaled by CSS)
        outline.style.setProperty("--rm-line", `${2 / s}px`);
        for (const c of outline.querySelectorAll(".rm-peak")) {
          c.setAttribute("r", String(9 / s));
          c.classList.toggle("rm-current", state.hot && c.dataset.spot === String(state.spot));
        }
      }
      const tint = stage.querySelector(".rm-tint");
      if (tint) tint.style.opacity = state.overlay ? String(d.opacity || 0) : "0";
    }
    const want = (el, on) => { if (on && el && el.dataset.src && el.src !== el.dataset.src) el.src = el.dataset.src; };
    want(main.querySelector(".rm-tint"), state.overlay && (d.opacity || 0) > 0);
    if (heatPane) want(heatPane.querySelector(".rm-img"), state.side);
    if (cropBox) want(cropBox.querySelector("img"), state.hot);
    root.dataset.zoom = state.zoom.toFixed(3);
    root.dataset.scale = s.toFixed(4);
    root.dataset.overlay = state.overlay ? "on" : "off";
    root.dataset.side = state.side ? "on" : "off";
    root.dataset.hot = state.hot ? "on" : "off";
    root.dataset.spot = String(state.spot);
    zl.textContent = `${state.zoom < 10 ? state.zoom.toFixed(1) : Math.round(state.zoom)}×`;
    zl.title = `${s.toFixed(2)} screen px per image px`;
    info.textContent = `${d.w}×${d.h}${d.scale < 1 ? " (shown from a " + Math.round(d.w * d.scale) + " px copy)" : ""} · ? keys`;
    if (bOv) bOv.classList.toggle("rm-on", state.overlay);
    if (bSide) bSide.classList.toggle("rm-on", state.side);
    if (bHot) bHot.classList.toggle("rm-on", state.hot);
  }

  function zoomTo(z, px, py) {
    // keep the image point under (px, py) of the pane where it is
    const pw = main.clientWidth, ph = main.clientHeight;
    if (px === undefined) { px = pw / 2; py = ph / 2; }
    const s0 = state.fit * state.zoom;
    const ix = state.cx + (px - pw / 2) / s0, iy = state.cy + (py - ph / 2) / s0;
    state.zoom = Math.min(Math.max(z, 1), MAX_ZOOM);
    const s1 = state.fit * state.zoom;
    state.cx = ix - (px - pw / 2) / s1;
    state.cy = iy - (py - ph / 2) / s1;
    draw();
  }
  function zoomBy(f, px, py) { zoomTo(state.zoom * f, px, py); }
  function reset() { state.zoom = 1; state.cx = d.w / 2; state.cy = d.h / 2; draw(); }
  function pan(dx, dy) { const s = state.fit * state.zoom; state.cx += dx / s; state.cy += dy / s; draw(); }
  function toggleOverlay() { state.overlay = !state.overlay; pref.set("overlay", state.overlay); draw(); }
  function toggleSide() { if (!heatPane) return; state.side = !state.side; pref.set("side", state.side); layout(); }
  function toggleHot() {
    if (!spots.length) return;
    // off -> the hottest spot -> the next ... -> off
    if (!state.hot) { state.hot = true; state.spot = 0; }
    else if (state.spot + 1 < spots.length) state.spot += 1;
    else { state.hot = false; state.spot = 0; }
    pref.set("hot", state.hot);
    showSpot();
    if (state.hot) {
      const p = spots[state.spot].peak;
      state.cx = p[0] + 0.5; state.cy = p[1] + 0.5; state.zoom = Math.max(state.zoom, 4);
    }
    layout();
  }

  // wheel and drag on either pane
  const onWheel = (e) => {
    e.preventDefault();
    const r = e.currentTarget.getBoundingClientRect();
    zoomBy(Math.exp(-e.deltaY * 0.0025), e.clientX - r.left, e.clientY - r.top);
  };
  let drag = null;
  const onDown = (e) => { if (e.button !== 0) return; drag = { x: e.clientX, y: e.clientY }; e.currentTarget.setPointerCapture(e.pointerId); e.currentTarget.classList.add("rm-dragging"); };
  const onMove = (e) => { if (!drag) return; pan(drag.x - e.clientX, drag.y - e.clientY); drag = { x: e.clientX, y: e.clientY }; };
  const onUp = (e) => { drag = null; e.currentTarget.classList.remove("rm-dragging"); };
  for (const p of [main, heatPane]) {
    if (!p) continue;
    p.addEventListener("wheel", onWheel, { passive: false });
    p.addEventListener("pointerdown", onDown);
    p.addEventListener("pointermove", onMove);
    p.addEventListener("pointerup", onUp);
    p.addEventListener("pointercancel", onUp);
    p.addEventListener("dblclick", (e) => { const r = p.getBoundingClientRect(); zoomBy(2, e.clientX - r.left, e.clientY - r.top); });
  }

  const onKey = (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey || typing(e)) return;
    const k = e.key;
    const step = 0.15 * Math.min(main.clientWidth, main.clientHeight);
    let used = true;
    if (k === "+" || k === "=") zoomBy(STEP);
    else if (k === "-" || k === "_") zoomBy(1 / STEP);
    else if (k === "0") reset();
    else if (k === "o" || k === "O") toggleOverlay();
    else if (k === "s" || k === "S") toggleSide();
    else if (k === "h" || k === "H") toggleHot();
    else if (k === "ArrowLeft") pan(-step, 0);
    else if (k === "ArrowRight") pan(step, 0);
    else if (k === "ArrowUp") pan(0, -step);
    else if (k === "ArrowDown") pan(0, step);
    else used = false;
    if (used) { e.preventDefault(); e.stopPropagation(); }
  };
  document.addEventListener("keydown", onKey, true);
  const ro = new ResizeObserver(() => layout());
  ro.observe(body);
  window.addEventListener("resize", layout);
  layout();

  const me = {
    destroy() {
      document.removeEventListener("keydown", onKey, true);
      window.removeEventListener("resize", layout);
      ro.disconnect();
      if (current === me) current = null;
    },
  };
  current = me;
  return () => me.destroy();
}
