/* payesh portal page: a MapLibre map of one city's indicators, its sites, and downloads.
 * Everything is fetched from this server with the token as a Bearer header; nothing is
 * loaded from elsewhere (no CDN, no base map), so the page works offline. */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const state = { token: null, me: null, city: null, layer: null, month: 0, markers: [], legend: null };
  window.payesh = { state };

  const GROUPS = [
    ["Energy use", /^(ntl_|lit_|electricity|load_suspect|lst_)/],
    ["Construction", /^(builtup|new_builtup|unauthorized|first_seen)/],
    ["Night-light pixels", /^(radiance|cf_cvg)$/],
    ["Data quality", /(valid_fraction|_p)$/],
  ];
  const QUALITY = /(valid_fraction|_p)$/;
  const ORDER = ["ntl_sum", "ntl_mean", "ntl_anomaly", "ntl_trend", "lit_fraction", "electricity_mwh",
    "load_suspect_score", "load_suspect", "lst_mean", "lst_anomaly", "lst_hotspot", "lst_hotspot_anomaly",
    "builtup_prob", "builtup_fraction", "new_builtup_m2", "unauthorized_m2", "unauthorized_sites", "first_seen"];
  const rank = (n) => (ORDER.indexOf(n) < 0 ? ORDER.length : ORDER.indexOf(n));
  const PREFERRED = ["ntl_sum", "builtup_prob", "unauthorized_m2"];

  // ------------------------------------------------------------------ token

  function readToken() {
    const hash = new URLSearchParams(location.hash.slice(1));
    const fromHash = hash.get("token");
    if (fromHash) {
      sessionStorage.setItem("payesh-token", fromHash);
      hash.delete("token");
      const rest = hash.toString();
      history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
    }
    return sessionStorage.getItem("payesh-token");
  }

  async function api(path, asBlob) {
    const res = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
    if (res.status === 401) {
      signOut("That token is not valid (or was revoked).");
      throw new Error("unauthorized");
    }
    if (!res.ok) {
      let detail = res.statusText;
      try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
      throw new Error(res.status + ": " + detail);
    }
    return asBlob ? res : res.json();
  }

  function signOut(message) {
    sessionStorage.removeItem("payesh-token");
    state.token = null;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem("payesh-token", t);
    location.reload();
  });
  $("signout").addEventListener("click", () => { signOut(""); });

  // ------------------------------------------------------------------ map

  const map = new maplibregl.Map({
    container: "map",
    style: {
      version: 8,
      sources: {},
      layers: [{ id: "background", type: "background", paint: { "background-color": "#e9edf1" } }],
    },
    center: [45, 38.5],
    zoom: 2,
    attributionControl: false,
    transformRequest: (url) => {
      if (state.token && new URL(url, location.href).origin === location.origin) {
        return { url, headers: { Authorization: "Bearer " + state.token } };
      }
      return { url };
    },
  });
  window.payesh.map = map;
  map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "top-right");
  map.addControl(new maplibregl.ScaleControl({ unit: "metric" }), "top-left");
  map.addControl(new maplibregl.AttributionControl({
    compact: false,
    customAttribution: "Indicators: payesh · imagery: Sentinel-2, Landsat, VIIRS",
  }));
  const mapReady = new Promise((resolve) => map.on("load", resolve));

  function tileUrl() {
    const c = state.city, l = state.layer;
    let url = `/api/cities/${c.name}/tiles/${l.name}/{z}/{x}/{y}.png`;
    if (l.has_time && c.months.length) url += "?time=" + c.months[state.month];
    return url;
  }

  function showLayer() {
    const url = tileUrl();
    const src = map.getSource("indicator");
    if (src) {
      src.setTiles([url]);
    } else {
      map.addSource("indicator", { type: "raster", tiles: [url], tileSize: 256, maxzoom: 18 });
      map.addLayer({
        id: "indicator", type: "raster", source: "indicator",
        paint: { "raster-opacity": $("opacity").value / 100, "raster-resampling": "nearest" },
      }, map.getLayer("city-outline") ? "city-outline" : undefined);
    }
    document.body.dataset.tiles = url;
  }

  // ------------------------------------------------------------------ panel

  function prettyUnits(u) {
    if (!u || u === "1") return "";
    return u.split(" (")[0].replace("m2", "m²").replace("cm-2", "cm⁻²").replace("sr-1", "sr⁻¹").replace("degC", "°C");
  }

  function prettyLabel(l) {
    const text = l.label.length > 34 ? l.name.replace(/_/g, " ") : l.label;
    return text.charAt(0).toUpperCase() + text.slice(1);
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(1);
    return (Math.round(v * 100) / 100).toLocaleString();
  }

  function yearToMonth(y) {
    const year = Math.floor(y);
    const m = Math.min(12, Math.floor((y - year) * 12) + 1);
    return `${year}-${String(m).padStart(2, "0")}`;
  }

  async function updateLegend() {
    const c = state.city, l = state.layer;
    const lg = await api(`/api/cities/${c.name}/layers/${l.name}/legend`);
    state.legend = lg;
    const units = lg.units === "year" ? "" : prettyUnits(lg.units);
    $("legend-title").textContent = prettyLabel(l) + (units ? ` (${units})` : "");
    $("legend-bar").style.background = `linear-gradient(to right, ${lg.colors.join(", ")})`;
    const show = lg.units === "year" ? yearToMonth : fmt;
    $("legend-min").textContent = show(lg.vmin);
    $("legend-max").textContent = show(lg.vmax);
  }

  function updateMonth() {
    const c = state.city, l = state.layer;
    const timeless = !l.has_time || !c.months.length;
    $("time").disabled = timeless;
    $("month-label").textContent = timeless ? "all months" : c.months[state.month];
  }

  async function selectLayer(name) {
    state.layer = state.city.layers.find((l) => l.name === name);
    document.querySelectorAll(".layers label").forEach((el) => {
      el.classList.toggle("active", el.dataset.layer === name);
    });
    updateMonth();
    showLayer();
    await updateLegend();
  }

  function buildLayers() {
    const box = $("layers");
    box.innerHTML = "";
    const used = new Set();
    state.city.layers.filter((l) => QUALITY.test(l.name)).forEach((l) => used.add(l.name));
    const groups = GROUPS.map(([title, re]) => [title, state.city.layers.filter((l) => {
      if (re === GROUPS[3][1]) return QUALITY.test(l.name);
      if (used.has(l.name) || !re.test(l.name)) return false;
      used.add(l.name);
      return true;
    }).sort((a, b) => rank(a.name) - rank(b.name))]);
    groups.push(["Other", state.city.layers.filter((l) => !used.has(l.name))]);
    for (const [title, layers] of groups) {
      if (!layers.length) continue;
      const h = document.createElement("div");
      h.className = "layer-group";
      h.textContent = title;
      box.appendChild(h);
      for (const l of layers) {
        const lab = document.createElement("label");
        lab.dataset.layer = l.name;
        lab.title = l.name;
        const input = document.createElement("input");
        input.type = "radio";
        input.name = "layer";
        input.value = l.name;
        input.addEventListener("change", () => selectLayer(l.name));
        const text = document.createElement("span");
        text.textContent = prettyLabel(l);
        const units = document.createElement("span");
        units.className = "units";
        units.textContent = prettyUnits(l.units);
        lab.append(input, text, units);
        box.appendChild(lab);
      }
    }
  }

  function buildDownloads() {
    const sel = $("dl-layer");
    sel.innerHTML = "";
    const opts = [];
    if (state.city.sites) opts.push(["sites", "Construction sites", ["geojson", "parquet"]]);
    if (state.city.layers.some((l) => l.group === "tiles")) {
      opts.push(["tiles", "All tile indicators", ["csv", "geojson", "parquet", "netcdf"]]);
    }
    for (const l of state.city.layers) opts.push([l.name, prettyLabel(l), l.formats]);
    state.downloads = Object.fromEntries(opts.map(([n, , f]) => [n, f]));
    for (const [name, label] of opts) {
      const o = document.createElement("option");
      o.value = name;
      o.textContent = label;
      sel.appendChild(o);
    }
    sel.onchange = buildFormats;
    buildFormats();
  }

  const FORMAT_LABELS = {
    cog: "GeoTIFF (COG)", netcdf: "NetCDF", csv: "CSV (spreadsheet)",
    geojson: "GeoJSON", parquet: "GeoParquet",
  };

  function buildFormats() {
    const f = $("dl-format");
    f.innerHTML = "";
    for (const k of state.downloads[$("dl-layer").value] || []) {
      const o = document.createElement("option");
      o.value = k;
      o.textContent = FORMAT_LABELS[k] || k;
      f.appendChild(o);
    }
  }

  async function download() {
    const c = state.city, layer = $("dl-layer").value, format = $("dl-format").value;
    let url = `/api/cities/${c.name}/download/${layer}?format=${format}`;
    if ($("dl-month").checked && layer !== "sites" && c.months.length) url += "&time=" + c.months[state.month];
    $("dl-go").disabled = true;
    $("dl-status").textContent = "Preparing the file…";
    try {
      const res = await api(url, true);
      const cd = res.headers.get("Content-Disposition") || "";
      const m = /filename="?([^";]+)"?/.exec(cd);
      const blob = await res.blob();
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = m ? m[1] : `${c.name}-${layer}`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
      $("dl-status").textContent = `Downloaded ${a.download} (${(blob.size / 1024).toFixed(0)} KB)`;
    } catch (e) {
      $("dl-status").textContent = "Download failed: " + e.message;
    } finally {
      $("dl-go").disabled = false;
    }
  }
  $("dl-go").addEventListener("click", download);

  // ------------------------------------------------------------------ sites

  function centre(geom) {
    const rings = geom.type === "Polygon" ? [geom.coordinates[0]] : geom.coordinates.map((p) => p[0]);
    let x = 0, y = 0, n = 0;
    for (const ring of rings) for (const [lon, lat] of ring) { x += lon; y += lat; n += 1; }
    return [x / n, y / n];
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[ch]));
  }

  async function openSite(f, lngLat) {
    const p = f.properties;
    const html = `<div class="popup"><h3>Site ${esc(p.site_id)}</h3><table>
      <tr><td>Status</td><td class="status-${esc(p.status)}">${esc(p.status)}</td></tr>
      <tr><td>First seen</td><td>${esc(p.first_seen || "–")}</td></tr>
      <tr><td>Area</td><td>${Math.round(p.area_m2).toLocaleString()} m²</td></tr>
      <tr><td>Tile</td><td>${esc(p.tile)}</td></tr>
      <tr><td>Permit</td><td>${esc(p.permit_id || "none")}</td></tr>
      <tr><td>Confidence</td><td>${Math.round(p.confidence * 100)}%</td></tr>
      </table><img alt="evidence for site ${esc(p.site_id)}" class="chip"></div>`;
    const popup = new maplibregl.Popup({ maxWidth: "600px" }).setLngLat(lngLat).setHTML(html).addTo(map);
    try {
      const res = await api(p.chip, true);
      const img = popup.getElement().querySelector("img.chip");
      if (img) img.src = URL.createObjectURL(await res.blob());
    } catch (e) { /* no evidence for this site */ }
  }

  async function loadSites() {
    state.markers.forEach((m) => m.remove());
    state.markers = [];
    const fc = await api(`/api/cities/${state.city.name}/sites`);
    state.sites = fc;
    const list = $("sites");
    list.innerHTML = "";
    const bad = fc.features.filter((f) => f.properties.status === "unauthorized").length;
    $("site-count").textContent = `${bad} unauthorized`;
    if (map.getSource("sites")) map.getSource("sites").setData(fc);
    else {
      map.addSource("sites", { type: "geojson", data: fc });
      map.addLayer({ id: "sites-outline", type: "line", source: "sites",
        paint: { "line-color": ["match", ["get", "status"], "unauthorized", "#c0392b", "#2e8b57"], "line-width": 2 } });
    }
    for (const f of fc.features) {
      const p = f.properties;
      const el = document.createElement("div");
      el.className = "site-marker " + p.status;
      el.title = `${p.site_id} (${p.status})`;
      const ll = centre(f.geometry);
      const marker = new maplibregl.Marker({ element: el }).setLngLat(ll).addTo(map);
      el.addEventListener("click", (ev) => { ev.stopPropagation(); openSite(f, ll); });
      state.markers.push(marker);
      const li = document.createElement("li");
      li.innerHTML = `<span class="dot ${esc(p.status)}"></span>${esc(p.site_id)}<span class="meta">${esc(p.first_seen || "")} · ${Math.round(p.area_m2).toLocaleString()} m²</span>`;
      li.addEventListener("click", () => { map.flyTo({ center: ll, zoom: Math.max(map.getZoom(), 15) }); openSite(f, ll); });
      list.appendChild(li);
    }
  }

  // ------------------------------------------------------------------ city

  async function openCity(name) {
    const c = await api(`/api/cities/${name}`);
    state.city = c;
    state.month = Math.max(0, c.months.length - 1);
    $("city-title").textContent = c.title;
    $("city-sub").textContent = `Satellite monitoring of energy use and construction · ${c.months[0] || ""} – ${c.months[c.months.length - 1] || ""}`;
    document.title = `${c.title} — payesh`;
    const t = $("time");
    t.max = Math.max(0, c.months.length - 1);
    t.value = state.month;
    $("month-first").textContent = c.months[0] || "";
    $("month-last").textContent = c.months[c.months.length - 1] || "";
    $("foot").textContent = `Data version ${c.snapshot.slice(0, 8)}, committed ${c.committed.replace("T", " ")}. ` +
      "Values are estimates from satellite imagery; open the downloads in QGIS or a spreadsheet.";
    await mapReady;
    const [w, s, e, n] = c.bbox;
    const outline = { type: "Feature", properties: {}, geometry: { type: "Polygon",
      coordinates: [[[w, s], [e, s], [e, n], [w, n], [w, s]]] } };
    if (map.getSource("city")) map.getSource("city").setData(outline);
    else {
      map.addSource("city", { type: "geojson", data: outline });
      map.addLayer({ id: "city-outline", type: "line", source: "city",
        paint: { "line-color": "#0f5c7a", "line-width": 2, "line-dasharray": [3, 2] } });
    }
    map.fitBounds([[w, s], [e, n]], { padding: 40, duration: 0 });
    buildLayers();
    buildDownloads();
    const first = PREFERRED.find((p) => c.layers.some((l) => l.name === p)) || (c.layers[0] && c.layers[0].name);
    const radio = document.querySelector(`.layers input[value="${first}"]`);
    if (radio) radio.checked = true;
    await selectLayer(first);
    await loadSites();
    document.body.dataset.city = c.name;
  }

  $("time").addEventListener("input", (ev) => {
    state.month = Number(ev.target.value);
    updateMonth();
    showLayer();
  });
  $("opacity").addEventListener("input", (ev) => {
    if (map.getLayer("indicator")) map.setPaintProperty("indicator", "raster-opacity", ev.target.value / 100);
  });
  $("city-select").addEventListener("change", (ev) => openCity(ev.target.value));

  async function start() {
    state.token = readToken();
    if (!state.token) { signOut(""); return; }
    state.me = await api("/api/me");
    $("who").textContent = state.me.scope === "admin" ? "Administrator" : `Municipality of ${state.me.scope}`;
    $("signout").hidden = false;
    const cities = await api("/api/cities");
    if (!cities.length) { $("city-title").textContent = "No city available for this token"; return; }
    if (cities.length > 1) {
      const sel = $("city-select");
      for (const c of cities) {
        const o = document.createElement("option");
        o.value = c.name;
        o.textContent = c.title;
        sel.appendChild(o);
      }
      sel.hidden = false;
    }
    await openCity(cities[0].name);
    document.body.dataset.ready = "1";
  }

  start().catch((e) => {
    if (e.message !== "unauthorized") $("city-sub").textContent = "Could not load: " + e.message;
  });
})();
